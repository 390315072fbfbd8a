"""The landmark network (`--landmarks net`): 68 points and an estimate of their error for a whole
batch of face crops at once, in numpy, one thread.

A small convolutional network distilled from dlib's predictor (`benchmarks/make_landmark_net.py`):
its targets are the landmarks dlib fits from the HOG detector's box on FER2013 Training faces, so
it reproduces dlib's landmarks, not a human's; it learns from dlib's 300-W model, and the same
research-only terms apply (the file's card says so). The **error head** reads the network's last
hidden layer and predicts the fit's own error (inter-ocular units, `prepro.landmarks.landmark_error`),
learnt on Training faces the network never saw; the **quality** is that estimate calibrated to the
meaning it has everywhere: the probability that the landmarks lie within 0.20 inter-ocular
distances of the detector-box ones.

Input: a face crop, normalised to ``side`` x ``side`` pixels: the image itself for a face crop
(`aligned`), the box with a margin for a detector's or a given box (`crop_box`). Each convolution is
one im2col and one matrix product for the whole batch. The network's points are then refined on the
image itself (`prepro.landmark_refine`), and the error head estimates the refined points' error
(`--landmarks net-fast` keeps the network's own points, scored by their own head). With the second
look (`--second-look`), a fit whose estimated error is above `SECOND_LOOK_ABOVE` is fitted again by
dlib's predictor from the box the network's points imply (or the face's own box), and that fit is
kept: dlib's points and quality, for a fifth of the faces. The weights live in ``landmark_net.npz``
beside this module, read without pickle; nothing is loaded until first used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from prepro.errors import DataError
from prepro.landmark_models import implied_boxes, load_landmark_models, procrustes_rms_many, quality_signs_many
from prepro.landmark_refine import MIN_BATCH, RefineStage, one_thread, refine
from prepro.landmarks import JAW, LEFT_EYE, LEFT_EYEBROW, MOUTH_INNER, MOUTH_OUTER, NOSE_BRIDGE, NOSE_TIP, \
    RIGHT_EYE, RIGHT_EYEBROW, Fit, fits_from_boxes

NET_FILE = Path(__file__).with_name("landmark_net.npz")
GREY_EPS = 8.0  # grey levels added to a crop's standard deviation: flat crops stay near zero
# The error head's estimates are held to log(0.005)..log(1): below, the yardstick's own noise;
# above, the landmarks are anywhere (a crop that holds no face).
LOG_ERROR_RANGE = (math.log(0.005), 0.0)
# With the second look, fits whose estimated error (inter-ocular units) is above this are fitted
# again by dlib's predictor: about a fifth of the held-back Training faces, where the share above
# 0.10 falls from 7.0% to 4.3% (all of them refitted: 4.1%; BENCHMARKS.md).
SECOND_LOOK_ABOVE = 0.06


def mirror_permutation() -> np.ndarray:
    """``p`` such that the landmarks of the mirrored face are ``mirrored[p]`` (iBUG 300-W order):
    point i of a face seen in a mirror is where point ``p[i]`` of the face was. Each region maps
    onto its partner walked the other way round (the contours are clockwise in the image)."""
    p = np.arange(68)
    p[JAW] = np.arange(16, -1, -1)
    p[RIGHT_EYEBROW], p[LEFT_EYEBROW] = np.arange(26, 21, -1), np.arange(21, 16, -1)
    p[NOSE_BRIDGE] = np.arange(27, 31)
    p[NOSE_TIP] = np.arange(35, 30, -1)
    # Eyes: 36 (outer corner of the right eye) <-> 45 (outer corner of the left), then on round.
    p[RIGHT_EYE] = 42 + (3 - np.arange(6)) % 6
    p[LEFT_EYE] = 36 + (3 - np.arange(6)) % 6
    p[MOUTH_OUTER] = 48 + (6 - np.arange(12)) % 12  # 48 <-> 54, 51 and 57 stay
    p[MOUTH_INNER] = 60 + (4 - np.arange(8)) % 8  # 60 <-> 64, 62 and 66 stay
    return p


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """The N x 68 x 2 landmarks of images ``width`` pixels wide, for the mirrored images."""
    out = np.array(landmarks, dtype=np.float64)[:, mirror_permutation()]
    out[..., 0] = (width - 1) - out[..., 0]
    return out


@dataclass(frozen=True)
class ErrorHead:
    """Estimates a fit's log error from its `head_input` row; the quality is that estimate calibrated."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # a small ReLU perceptron -> log error
    scale: tuple[np.ndarray, np.ndarray]  # its input mean and standard deviation
    quality_ab: np.ndarray  # quality = sigmoid(a * predicted log error + b)

    def log_error(self, rows: np.ndarray) -> np.ndarray:
        """The estimate of log(landmark error) for each row of `head_input`."""
        mean, std = self.scale
        h = (rows - mean) / std
        for k, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return np.clip(h[:, 0].astype(np.float64), *LOG_ERROR_RANGE)

    def calibrated(self, log_error: np.ndarray) -> np.ndarray:
        """The quality of fits whose estimated log errors are ``log_error``: the calibration."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.quality_ab[0] * log_error + self.quality_ab[1], -50, 50)))

    def quality_of(self, error: float) -> float:
        """The quality this head gives a fit whose estimated error is ``error`` (it falls as the
        estimate grows)."""
        return float(self.calibrated(np.clip(math.log(error), *LOG_ERROR_RANGE)))

    def quality(self, rows: np.ndarray) -> np.ndarray:
        """The calibrated quality (N,) of N rows of `head_input`."""
        n = len(rows)
        if n < MIN_BATCH:
            rows = np.concatenate([rows, np.zeros((MIN_BATCH - n, rows.shape[1]), rows.dtype)])
        with one_thread():
            log_error = self.log_error(rows)[:n]
        return self.calibrated(log_error)


@dataclass(frozen=True)
class LandmarkNet:
    side: int  # crops are resampled to side x side pixels
    margin: np.ndarray  # (dx, dy, scale): crop centre = box centre + (dx, dy) * box side, crop side = scale * box side
    convs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (9 cin x cout weights, cout biases), 3x3, stride 2, pad 1
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]  # hidden layer, then the 136 outputs
    head: ErrorHead  # the error of the refined points (`--landmarks net`)
    fast_head: ErrorHead  # the error of the network's own points (`--landmarks net-fast`)
    card: dict  # data, recipe, figures, terms
    refine: tuple[RefineStage, ...] = ()  # stages that move the points on the image (prepro.landmark_refine)

    def predict(self, crops: np.ndarray, refined: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N x 68 x 2, crop pixels, pixel centres at the integers; refined on the crops
        themselves unless not ``refined``) and quality (N,) of N crops of ``side`` x ``side`` grey
        pixels (uint8)."""
        marks, hidden = self.points(crops)
        return self.finish(list(np.asarray(crops)), marks, marks, hidden, refined)

    def finish(self, images: list[np.ndarray], marks: np.ndarray, own: np.ndarray, hidden: np.ndarray,
               refined: bool) -> tuple[np.ndarray, np.ndarray]:
        """(landmarks, quality) of N faces from `points`' output: ``own`` its landmarks in crop
        pixels, ``marks`` the same in ``images[i]``'s pixels, refined there unless not ``refined``."""
        if not refined:
            return marks, self.fast_head.quality(head_input(hidden, own))
        better, moves = refine(images, marks, self.refine)
        return better, self.head.quality(head_input(hidden, own, refinement_signs(images, better, moves)))

    def points(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's own landmarks (N x 68 x 2, crop pixels) and its last hidden layer, for N
        crops of ``side`` x ``side`` grey pixels."""
        crops = np.asarray(crops)
        if crops.ndim != 3 or crops.shape[1:] != (self.side, self.side):
            raise DataError(f"the landmark network takes N x {self.side} x {self.side} crops, got {crops.shape}")
        if not len(crops):
            return np.zeros((0, 68, 2)), np.zeros((0, self.dense[0][0].shape[1]), np.float32)
        n = len(crops)
        x = normalised(crops)
        if n < MIN_BATCH:
            x = np.concatenate([x, np.zeros((MIN_BATCH - n,) + x.shape[1:], x.dtype)])
        with one_thread():
            marks, hidden = self.forward(x)
        return (marks[:n].astype(np.float64) + 1.0) * (self.side / 2) - 0.5, hidden[:n]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N x 68 x 2, -1..1 across the crop) and the last hidden layer of `normalised` crops."""
        h = x[..., None]
        for w, b in self.convs:
            h = _conv3x3_stride2(h, w, b)
        h = h.reshape(len(h), -1)
        (w0, b0), (w1, b1) = self.dense
        hidden = np.maximum(h @ w0 + b0, 0.0)
        return (hidden @ w1 + b1).reshape(-1, 68, 2), hidden

    def crop_box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """The square crop the network reads for a face box (a detector's or a given one)."""
        l, t, r, b = box
        side = math.sqrt(max(r - l, 1e-6) * max(b - t, 1e-6))
        dx, dy, scale = self.margin
        cx, cy, half = (l + r) / 2 + dx * side, (t + b) / 2 + dy * side, scale * side / 2
        return cx - half, cy - half, cx + half, cy + half


def whole_image_box(gray: np.ndarray) -> tuple[float, float, float, float]:
    """The square the network reads for a face crop: the image itself (centred, the longer side)."""
    h, w = gray.shape
    side = float(max(h, w))
    return (w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2


def head_input(hidden: np.ndarray, marks: np.ndarray, signs: np.ndarray | None = None) -> np.ndarray:
    """What an error head reads: the network's last hidden layer, its own landmarks' distance to the
    mean face, and (for the refined points) the signs of the refined landmarks (`refinement_signs`)."""
    rms = np.minimum(procrustes_rms_many(np.asarray(marks, np.float64)), 10.0)
    parts = [hidden, rms[:, None].astype(np.float32)] + ([] if signs is None else [signs.astype(np.float32)])
    return np.concatenate(parts, axis=1)


def refinement_signs(grays: list[np.ndarray], refined: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """N x 5: how far the refinement moved the points (all, its last stage; inter-ocular units),
    and the refined points' appearance score, distance to the mean face and face evidence (the
    signs of dlib's quality, `prepro.landmark_models`)."""
    models = load_landmark_models()
    with one_thread():
        signs = quality_signs_many(grays, refined, implied_boxes(refined, models.implied_box), models)[:, :3]
    return np.concatenate([np.minimum(moves, 10.0), signs], axis=1)


def normalised(crops: np.ndarray) -> np.ndarray:
    """Crops as the network reads them: float32, each shifted to mean 0 and scaled by its spread."""
    x = crops.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) / (x.std(axis=(1, 2), keepdims=True) + GREY_EPS)


def _conv3x3_stride2(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution, stride 2, zero padding 1, then ReLU, on N x H x W x C: one matrix product
    over the im2col patches of the whole batch."""
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
    s = xp.strides
    patches = np.lib.stride_tricks.as_strided(xp, (n, ho, wo, 3, 3, c), (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]))
    y = patches.reshape(n * ho * wo, 9 * c) @ w
    y += b
    return np.maximum(y, 0.0, out=y).reshape(n, ho, wo, -1)


def cut_crop(gray: np.ndarray, box: tuple[float, float, float, float], side: int) -> np.ndarray:
    """The square ``box`` of ``gray`` resampled to ``side`` x ``side`` (edge pixels repeated outside
    the image); a much larger box is shrunk with an area filter first, so that it does not alias."""
    import cv2

    l, t, r, b = (float(v) for v in box)
    k = (r - l) / side  # gray pixels per crop pixel
    src = gray
    x0 = y0 = 0
    fx = fy = 1.0
    if k > 1.5:
        h, w = gray.shape
        x0, y0 = min(max(int(math.floor(l)), 0), w - 1), min(max(int(math.floor(t)), 0), h - 1)
        x1, y1 = max(min(int(math.ceil(r)), w), x0 + 1), max(min(int(math.ceil(b)), h), y0 + 1)
        sub = gray[y0:y1, x0:x1]
        size = (max(1, round(sub.shape[1] / k)), max(1, round(sub.shape[0] / k)))
        src = cv2.resize(sub, size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / sub.shape[1], size[1] / sub.shape[0]
    # crop pixel j's centre lies at gray's continuous x = l + (j + 0.5) k (pixel centres at +0.5)
    sx, sy = (r - l) * fx / side, (b - t) * fy / side
    ox, oy = (l - x0) * fx, (t - y0) * fy
    m = np.array([[1 / sx, 0, (0.5 - ox) / sx - 0.5], [0, 1 / sy, (0.5 - oy) / sy - 0.5]])
    return cv2.warpAffine(src, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def fits_from_net(grays: list[np.ndarray], boxes: list, net: "LandmarkNet", refined: bool = True,
                  second_look: Any = None) -> list[Fit]:
    """The network's fit of face i in ``grays[i]``: from ``boxes[i]`` (with the margin), or from the
    whole image when it is None; landmarks in ``grays[i]``'s pixels, refined on ``grays[i]`` unless
    not ``refined`` (`--landmarks net-fast`). All faces in one batch. The box of a crop's fit is the
    one its landmarks imply (where the detector would have put it). ``second_look``: dlib's shape
    predictor, to fit the doubtful faces again (`with_second_look`), or None."""
    if not len(grays):
        return []
    squares = [whole_image_box(g) if b is None else net.crop_box(b) for g, b in zip(grays, boxes)]
    crops = np.stack([cut_crop(g, sq, net.side) for g, sq in zip(grays, squares)])
    own, hidden = net.points(crops)
    sq = np.asarray(squares, np.float64)
    scale = (sq[:, 2] - sq[:, 0]) / net.side
    marks, quality = net.finish(grays, (own + 0.5) * scale[:, None, None] + sq[:, None, :2] - 0.5, own, hidden,
                                refined)
    implied = implied_boxes(marks, load_landmark_models().implied_box)
    fits = [Fit(tuple(float(v) for v in (implied[i] if b is None else b)), marks[i], float(quality[i]))
            for i, b in enumerate(boxes)]
    return fits if second_look is None else with_second_look(grays, fits, net.head if refined else net.fast_head,
                                                             second_look)


def with_second_look(grays: list[np.ndarray], fits: list[Fit], head: ErrorHead, shape_model: Any) -> list[Fit]:
    """``fits`` (of face i in ``grays[i]``, scored by ``head``) with each whose estimated error is
    above `SECOND_LOOK_ABOVE` replaced by dlib's fit (``shape_model``) from the same box: the box its
    points imply for a crop, the face's own box otherwise."""
    below = head.quality_of(SECOND_LOOK_ABOVE)
    doubtful = [i for i, f in enumerate(fits) if f.quality < below]
    again = fits_from_boxes([grays[i] for i in doubtful], [fits[i].box for i in doubtful], shape_model)
    out = list(fits)
    for i, fit in zip(doubtful, again):
        out[i] = fit
    return out


@lru_cache(maxsize=2)
def load_landmark_net(path: str | None = None) -> LandmarkNet:
    """The shipped network (cached per process), read without pickle."""
    path = Path(path) if path else NET_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            return LandmarkNet(side=int(z["side"]), margin=z["margin"].astype(np.float64),
                               convs=_stored_layers(z, "conv"), dense=_stored_layers(z, "dense"),
                               head=_stored_head(z, ""), fast_head=_stored_head(z, "fast_"),
                               card=json.loads(str(z["card"])), refine=_stored_stages(z))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path} cannot be read as the landmark network ({e}): reinstall faceblocks") from None


def _stored_layers(z, prefix: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    return tuple((z[f"{prefix}{k}_w"].astype(np.float32), z[f"{prefix}{k}_b"].astype(np.float32))
                 for k in range(int(z[f"{prefix}_count"])))


def _stored_head(z, prefix: str) -> ErrorHead:
    return ErrorHead(_stored_layers(z, f"{prefix}head"),
                     (z[f"{prefix}head_mean"].astype(np.float32), z[f"{prefix}head_std"].astype(np.float32)),
                     z[f"{prefix}quality_ab"].astype(np.float64))


def _stored_stages(z) -> tuple[RefineStage, ...]:
    return tuple(RefineStage(float(z["refine_spacing"][k]), z[f"refine{k}_w"].astype(np.float32),
                             z[f"refine{k}_modes"].astype(np.float32), z[f"refine{k}_b"].astype(np.float32))
                 for k in range(int(z["refine_count"])))


def save_landmark_net(path: Path, side: int, margin: np.ndarray, layers: dict[str, list], heads: dict[str, ErrorHead],
                      card: dict, stages: tuple[RefineStage, ...] = ()) -> None:
    """Write the network in the format `load_landmark_net` reads (used by the making script);
    ``layers``: {"conv": [(w, b), ...], "dense": [...]}; ``heads``: {"": the refined points' head,
    "fast_": the network's own points'}; the stages' weights as float16 (the making script measures
    them so, `half_stages`)."""
    arrays: dict[str, np.ndarray] = {"refine_count": np.array(len(stages)),
                                     "refine_spacing": np.array([st.spacing for st in stages], np.float64)}
    for k, st in enumerate(stages):
        arrays[f"refine{k}_w"], arrays[f"refine{k}_modes"] = st.weights.astype(np.float16), st.modes.astype(np.float16)
        arrays[f"refine{k}_b"] = st.bias.astype(np.float32)
    for prefix, head in heads.items():
        layers = {**layers, f"{prefix}head": list(head.layers)}
        arrays[f"{prefix}head_mean"], arrays[f"{prefix}head_std"] = (np.asarray(v, np.float32) for v in head.scale)
        arrays[f"{prefix}quality_ab"] = np.asarray(head.quality_ab, np.float64)
    for prefix, pairs in layers.items():
        arrays[f"{prefix}_count"] = np.array(len(pairs))
        for k, (w, b) in enumerate(pairs):
            arrays[f"{prefix}{k}_w"], arrays[f"{prefix}{k}_b"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
    np.savez_compressed(path, side=np.array(side), margin=np.asarray(margin, np.float64),
                        card=np.array(json.dumps(card)), **arrays)


def half_stages(stages: tuple[RefineStage, ...]) -> tuple[RefineStage, ...]:
    """The stages as `load_landmark_net` gives them back from the file (weights through float16)."""
    return tuple(RefineStage(st.spacing, st.weights.astype(np.float16).astype(np.float32),
                             st.modes.astype(np.float16).astype(np.float32), st.bias.astype(np.float32))
                 for st in stages)
