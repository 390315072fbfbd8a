"""The small learned models around dlib's landmark predictor, and the features they read.

dlib's 68-point predictor was trained on boxes from dlib's HOG face detector: started from another
box (the whole image of a face crop, say) it often settles on a collapsed or shifted face. Two
models, learned from FER2013 train faces that the HOG detector finds
(`benchmarks/make_landmark_models.py`), keep that from happening without running a detector:

* the **start box**: where the HOG detector would put its box on a face crop, regressed from
  gradient-orientation histograms of the crop (a two-layer perceptron, numpy only);
* the **quality**: the probability that the landmarks lie within 0.2 inter-ocular distances of
  those the predictor gives from the detector's own box, from four signs: an appearance score of
  the face aligned by the landmarks, the landmarks' distance to the mean face shape, the contrast
  of eyes, brows and lip line against skin at the predicted places, and how well the box the
  landmarks imply agrees with the box they were started from.

The weights live in ``landmark_models.npz`` beside this module (about 1 MB), with the facts of how
they were made. Everything here is numpy and OpenCV; nothing is loaded until first used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from prepro.errors import DataError

MODELS_FILE = Path(__file__).with_name("landmark_models.npz")
MEAN_SHAPE_FILE = Path(__file__).with_name("mean_shape.json")

FEATURE_SIDE = 48  # the start-box model reads the crop resized to this square
FEATURE_CELL = 8  # gradient histogram cells of this many pixels
ALIGNED_SIDE = 24  # the appearance model reads the face aligned into this square
ALIGNED_IOD = 0.30  # ... with the eyes this fraction of its side apart
ORIENTATIONS = 9  # unsigned gradient orientation bins

# The face-evidence sign: faces have dark eyes, brows and lip line on lighter skin (nose bridge,
# cheeks, upper lip) at the predicted places; e = (skin - dark) mean grey / (grey std + 2).
_SKIN_PAIRS = np.array([[28, 28], [29, 29], [30, 30], [2, 31], [14, 35], [3, 48], [13, 54], [33, 51]])
_DARK_POINTS = np.array([19, 24, 37, 38, 43, 44])


# ---------------------------------------------------------------------------------------------
# Shape


@lru_cache(maxsize=1)
def load_mean_shape() -> np.ndarray:
    """The mean 68-point face (68x2 float64): centred, unit inter-ocular distance, eyes level."""
    with open(MEAN_SHAPE_FILE, encoding="utf-8") as f:
        shape = np.asarray(json.load(f)["mean_shape"], dtype=np.float64)
    if shape.shape != (68, 2):
        raise DataError(f"{MEAN_SHAPE_FILE} holds a {shape.shape} shape, expected (68, 2): reinstall faceblocks")
    return shape - shape.mean(axis=0)


def procrustes_rms(landmarks: np.ndarray) -> float:
    """RMS residual, in inter-ocular units, of the landmarks similarity-aligned (translation,
    rotation, uniform scale) to the mean face; infinite for degenerate landmarks."""
    return float(procrustes_rms_many(np.asarray(landmarks, dtype=np.float64)[None])[0])


def procrustes_rms_many(landmarks: np.ndarray) -> np.ndarray:
    """`procrustes_rms` of each of N sets of landmarks (N x 68 x 2): N floats."""
    p = np.asarray(landmarks, dtype=np.float64)
    m = load_mean_shape()
    # In complex form z = x + iy the best rotation+scale is one factor a = <z, m> / <z, z>, and
    # the residual has the closed form |m|^2 - |<z, m>|^2 / |z|^2 (m is centred).
    g = np.einsum("nki,kj->nij", p, m)
    n = p.shape[1]
    mean = p.sum(axis=1) / n
    zz = (p * p).sum(axis=(1, 2)) - n * (mean * mean).sum(axis=1)
    re, im = g[:, 0, 0] + g[:, 1, 1], g[:, 0, 1] - g[:, 1, 0]
    ok = zz > 1e-12  # also False for NaN
    safe = np.where(ok, zz, 1.0)
    rms = np.sqrt(np.maximum(float((m * m).sum()) - (re * re + im * im) / safe, 0.0) / n)
    return np.where(ok, rms, math.inf)


def _evidence_weights() -> tuple[np.ndarray, np.ndarray]:
    """Sample points as linear combinations of the 68 landmarks, and the +skin/-dark weights."""
    rows = []
    for i, j in _SKIN_PAIRS:
        r = np.zeros(68)
        r[i] += 0.5
        r[j] += 0.5
        rows.append(r)
    dark = ([list(range(36, 42)), list(range(42, 48))] + [[i] for i in _DARK_POINTS]
            + [[61, 62, 63, 65, 66, 67]])
    for pts in dark:  # eye centres, brows, upper eyelids, lip line
        r = np.zeros(68)
        r[pts] = 1.0 / len(pts)
        rows.append(r)
    sign = np.r_[np.full(len(_SKIN_PAIRS), 1.0 / len(_SKIN_PAIRS)), np.full(len(dark), -1.0 / len(dark))]
    return np.array(rows), sign


_EVIDENCE_W, _EVIDENCE_SIGN = _evidence_weights()


def face_evidence(gray: np.ndarray, landmarks: np.ndarray) -> float:
    """(mean grey at skin points - mean grey at eyes, brows and lip line) / (grey std + 2) in the
    landmarks' box, with ``landmarks`` in ``gray``'s pixels: ~1-2 on faces, ~0 on blank images."""
    return float(face_evidence_many([gray], np.asarray(landmarks, dtype=np.float64)[None])[0])


def face_evidence_many(grays: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """`face_evidence` of face i in ``grays[i]`` for each of the N x 68 x 2 ``landmarks``."""
    import cv2

    p = np.asarray(landmarks, dtype=np.float64)
    lo, hi = p.min(axis=1), p.max(axis=1)
    out = np.zeros(len(p))
    for i, gray in enumerate(grays):
        h, w = gray.shape
        # One product per face: sample points land on exact halves, and a batched product's
        # other summation order would round some of them the other way.
        pts = np.rint(_EVIDENCE_W @ p[i]).astype(np.intp)
        x = np.clip(pts[:, 0], 0, w - 1)
        y = np.clip(pts[:, 1], 0, h - 1)
        diff = float(gray[y, x] @ _EVIDENCE_SIGN)
        x0, y0 = max(int(lo[i, 0]), 0), max(int(lo[i, 1]), 0)
        x1, y1 = min(int(hi[i, 0]) + 2, w), min(int(hi[i, 1]) + 2, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        step = max(1, max(x1 - x0, y1 - y0) // 64)  # ~64x64 samples bound the cost on big photos
        box = np.ascontiguousarray(gray[y0:y1:step, x0:x1:step])
        out[i] = diff / (float(cv2.meanStdDev(box)[1][0, 0]) + 2.0)  # ~10x faster than ndarray.std
    return out


# ---------------------------------------------------------------------------------------------
# Features


@lru_cache(maxsize=4)
def _cell_index(side: int, cell: int) -> np.ndarray:
    c = np.arange(side) // cell
    return ((c[:, None] * (side // cell) + c[None, :]) * ORIENTATIONS).astype(np.intp)


def gradient_histograms(img: np.ndarray, side: int = FEATURE_SIDE, cell: int = FEATURE_CELL) -> np.ndarray:
    """HOG-like features of ``img`` resized to ``side`` x ``side``: unsigned gradient orientation
    histograms per ``cell`` x ``cell`` cell, normalised over overlapping 2x2 cell blocks."""
    return gradient_histograms_many(resized_square(img, side)[None], cell)[0]


def resized_square(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` resized to ``side`` x ``side`` (area filter to shrink, bilinear to enlarge)."""
    if img.shape == (side, side):
        return img
    import cv2

    small = max(img.shape) > side
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if small else cv2.INTER_LINEAR)


def gradient_histograms_many(imgs: np.ndarray, cell: int = FEATURE_CELL) -> np.ndarray:
    """`gradient_histograms` of N square images of one size (N x side x side), as N x F float32,
    in a few array operations for the whole stack."""
    import cv2

    n_img, side = imgs.shape[0], imgs.shape[1]
    f = imgs.astype(np.float32)
    # The [-1, 0, 1] derivative with OpenCV's reflect-101 border (zero in the first and last
    # row/column): what cv2.Sobel(ksize=1) gives, for the whole stack at once.
    gx = np.empty_like(f)
    gy = np.empty_like(f)
    np.subtract(f[:, :, 2:], f[:, :, :-2], out=gx[:, :, 1:-1])
    np.subtract(f[:, 2:, :], f[:, :-2, :], out=gy[:, 1:-1, :])
    gx[:, :, 0] = gx[:, :, -1] = 0.0
    gy[:, 0, :] = gy[:, -1, :] = 0.0
    mag, ang = cv2.cartToPolar(gx.reshape(-1, side), gy.reshape(-1, side))
    # Orientation bins, in place and in float32 as before: floor(mod(angle, pi) * 9 / pi), at most 8.
    # The angles lie in [0, 2 pi], where subtracting pi (exact there) is np.mod at a fifth of its
    # cost; twice, for an angle of exactly 2 pi.
    pi = np.float32(np.pi)
    for _ in range(2):
        np.subtract(ang, pi, out=ang, where=ang >= pi)
    ang *= np.float32(ORIENTATIONS / np.pi)
    b = ang.astype(np.intp)
    np.minimum(b, ORIENTATIONS - 1, out=b)
    n = side // cell
    per_image = n * n * ORIENTATIONS
    index = b.reshape(n_img, side, side)
    index += _cell_index(side, cell)[None]
    index += (np.arange(n_img) * per_image)[:, None, None]
    h = np.bincount(index.ravel(), weights=mag.ravel(), minlength=n_img * per_image)
    h = h.reshape(n_img, n, n, ORIENTATIONS)
    blocks = np.concatenate([h[:, :-1, :-1], h[:, 1:, :-1], h[:, :-1, 1:], h[:, 1:, 1:]], axis=3)
    blocks /= np.sqrt((blocks * blocks).sum(axis=3, keepdims=True)) + 1e-3
    return blocks.reshape(n_img, -1).astype(np.float32)


@lru_cache(maxsize=1)
def _aligned_target() -> np.ndarray:
    return load_mean_shape() * (ALIGNED_SIDE * ALIGNED_IOD) + (ALIGNED_SIDE / 2 - 0.5)


def similarities_to(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity transforms (N x 2 x 3) taking each of N point sets (N x K x 2)
    onto the same ``dst``.
    In complex form the rotation and scale is a = <s, d> / <s, s> of the centred points."""
    s_mean, d_mean = src.mean(axis=1), dst.mean(axis=0)
    s, d = src - s_mean[:, None], dst - d_mean
    denom = (s * s).sum(axis=(1, 2))
    re = (s[..., 0] * d[:, 0] + s[..., 1] * d[:, 1]).sum(axis=1)
    im = (s[..., 0] * d[:, 1] - s[..., 1] * d[:, 0]).sum(axis=1)
    ok = denom > 1e-12
    re, im = np.where(ok, re / np.where(ok, denom, 1.0), 0.0), np.where(ok, im / np.where(ok, denom, 1.0), 0.0)
    rot = np.stack([np.stack([re, -im], axis=1), np.stack([im, re], axis=1)], axis=1)
    shift = d_mean - np.einsum("nij,nj->ni", rot, s_mean)
    return np.concatenate([rot, shift[:, :, None]], axis=2)


def appearance_features(gray: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face aligned by ``landmarks`` (``gray`` pixels) onto the mean shape in a small square:
    its normalised grey values and gradient histograms."""
    return appearance_features_many([gray], np.asarray(landmarks, np.float64)[None])[0]


def appearance_features_many(grays: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """`appearance_features` of face i in ``grays[i]`` for each of the N x 68 x 2 ``landmarks``."""
    import cv2

    maps = similarities_to(np.asarray(landmarks, np.float64), _aligned_target())
    crops = np.empty((len(grays), ALIGNED_SIDE, ALIGNED_SIDE), np.uint8)
    for i, (gray, m) in enumerate(zip(grays, maps)):
        crops[i] = cv2.warpAffine(gray, m, (ALIGNED_SIDE, ALIGNED_SIDE), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    c = crops.reshape(len(grays), -1).astype(np.float32)
    c = (c - c.mean(axis=1, keepdims=True)) / (c.std(axis=1, keepdims=True) + 2.0)
    return np.concatenate([c, gradient_histograms_many(crops, ALIGNED_SIDE // 4)], axis=1)


# ---------------------------------------------------------------------------------------------
# The models


@dataclass(frozen=True)
class Perceptron:
    """A small ReLU perceptron: standardised input, hidden layers, linear output.

    It runs in float64 on whole batches. A matrix product's rounding depends on the batch it is
    computed in; in float64 that is ~1e-16, far below anything the results are rounded to, so a
    face gets the same start box and quality whatever chunk it was processed in (resumed runs,
    other chunk sizes and job counts write the same shards)."""

    x_mean: np.ndarray
    x_std: np.ndarray
    weights: tuple[np.ndarray, ...]  # (in, out) per layer
    biases: tuple[np.ndarray, ...]
    y_mean: np.ndarray
    y_std: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, np.float64) - self.x_mean) / self.x_std
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if k < len(self.weights) - 1:
                np.maximum(h, 0.0, out=h)
        return h * self.y_std + self.y_mean


@dataclass(frozen=True)
class LandmarkModels:
    start_box: Perceptron  # crop features -> (centre x / W, centre y / H, log(side / sqrt(W H)))
    appearance: Perceptron  # appearance features -> logit of "landmarks agree"
    quality_weights: np.ndarray  # logistic weights over QUALITY_SIGNS
    quality_bias: float
    implied_box: np.ndarray  # (dx, dy, size): box centre = centroid + (dx, dy) * r, side = size * r
    about: dict  # how and from what the models were made


QUALITY_SIGNS = ("appearance", "shape_rms", "evidence", "box_disagreement")


def _perceptron(z, prefix: str) -> Perceptron:
    n = int(z[f"{prefix}_layers"])
    f64 = lambda key: z[f"{prefix}_{key}"].astype(np.float64)  # noqa: E731  (see Perceptron)
    return Perceptron(f64("x_mean"), f64("x_std"), tuple(f64(f"w{k}") for k in range(n)),
                      tuple(f64(f"b{k}") for k in range(n)), f64("y_mean"), f64("y_std"))


@lru_cache(maxsize=1)
def load_landmark_models(path: str | None = None) -> LandmarkModels:
    """The learned models (cached per process)."""
    path = Path(path) if path else MODELS_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            return LandmarkModels(
                start_box=_perceptron(z, "start"), appearance=_perceptron(z, "app"),
                quality_weights=z["quality_w"].astype(np.float64), quality_bias=float(z["quality_b"]),
                implied_box=z["implied_box"].astype(np.float64), about=json.loads(str(z["about"])))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path} cannot be read ({e}): reinstall faceblocks") from None


def save_landmark_models(path: Path, start: dict, app: dict, quality_w: np.ndarray, quality_b: float,
                         implied_box: np.ndarray, about: dict) -> None:
    """Write the models in the format `load_landmark_models` reads (used by the making script)."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, p in (("start", start), ("app", app)):
        arrays[f"{prefix}_layers"] = np.array(len(p["weights"]))
        for k, (w, b) in enumerate(zip(p["weights"], p["biases"])):
            arrays[f"{prefix}_w{k}"] = np.asarray(w, np.float32)
            arrays[f"{prefix}_b{k}"] = np.asarray(b, np.float32)
        for key in ("x_mean", "x_std", "y_mean", "y_std"):
            arrays[f"{prefix}_{key}"] = np.asarray(p[key], np.float32)
    np.savez_compressed(path, quality_w=np.asarray(quality_w, np.float64), quality_b=np.array(quality_b),
                        implied_box=np.asarray(implied_box, np.float64), about=np.array(json.dumps(about)),
                        **arrays)


# ---------------------------------------------------------------------------------------------
# Using them


def estimate_start_box(gray: np.ndarray, models: LandmarkModels) -> tuple[float, float, float, float]:
    """Where the HOG detector would put its box on the face crop ``gray`` (left, top, right,
    bottom in its pixels, exclusive), without running the detector."""
    return tuple(float(v) for v in estimate_start_boxes([gray], models)[0])


def estimate_start_boxes(grays: list[np.ndarray], models: LandmarkModels) -> np.ndarray:
    """`estimate_start_box` of each face crop, as N x 4: one feature pass and one model call."""
    feats = gradient_histograms_many(np.stack([resized_square(g, FEATURE_SIDE) for g in grays]))
    cx, cy, log_side = models.start_box(feats).T
    h, w = np.array([g.shape for g in grays], dtype=np.float64).T
    half = 0.5 * np.exp(log_side) * np.sqrt(w * h)
    return np.stack([cx * w - half, cy * h - half, cx * w + half, cy * h + half], axis=1)


def implied_box(landmarks: np.ndarray, implied: np.ndarray) -> tuple[float, float, float, float]:
    """The box the detector would have had to give for these landmarks, from ``implied`` (dx, dy,
    size: the learned relation between HOG boxes and the landmarks the predictor finds in them)."""
    return tuple(float(v) for v in implied_boxes(np.asarray(landmarks, np.float64)[None], implied)[0])


def implied_boxes(landmarks: np.ndarray, implied: np.ndarray) -> np.ndarray:
    """`implied_box` of each of N x 68 x 2 landmarks, as N x 4."""
    p = np.asarray(landmarks, np.float64)
    c = p.mean(axis=1)
    r = np.sqrt(((p - c[:, None]) ** 2).sum(axis=2).mean(axis=1))
    dx, dy, size = implied
    cx, cy, half = c[:, 0] + dx * r, c[:, 1] + dy * r, 0.5 * size * r
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def shape_signs(gray: np.ndarray, landmarks: np.ndarray, box: tuple[float, float, float, float],
                implied: np.ndarray) -> np.ndarray:
    """The signs that need no learned model: distance to the mean shape, face evidence, and how far
    the box the landmarks imply (``implied``: `LandmarkModels.implied_box`) is from ``box``."""
    return shape_signs_many([gray], np.asarray(landmarks, np.float64)[None], np.asarray([box], np.float64),
                            implied)[0]


def shape_signs_many(grays: list[np.ndarray], landmarks: np.ndarray, boxes: np.ndarray,
                     implied: np.ndarray) -> np.ndarray:
    """`shape_signs` of face i (``grays[i]``, ``landmarks[i]``, ``boxes[i]``), as N x 3."""
    p = np.asarray(landmarks, np.float64)
    boxes = np.asarray(boxes, np.float64)
    out = np.tile([10.0, 0.0, 10.0], (len(p), 1))  # degenerate landmarks: as far from a face as it gets
    rms = procrustes_rms_many(p)
    good = np.flatnonzero(np.isfinite(rms))
    if len(good):
        side = np.maximum(boxes[good, 2] - boxes[good, 0], 1e-6)
        disagreement = np.abs(implied_boxes(p[good], implied) - boxes[good]).mean(axis=1) / side
        evidence = face_evidence_many([grays[i] for i in good], p[good])
        out[good] = np.stack([np.minimum(rms[good], 10.0), np.clip(evidence, -5.0, 5.0),
                              np.minimum(disagreement, 10.0)], axis=1)
    return out


def quality_signs(gray: np.ndarray, landmarks: np.ndarray, box: tuple[float, float, float, float],
                  models: LandmarkModels) -> np.ndarray:
    """The four signs (`QUALITY_SIGNS`) for ``landmarks`` found from ``box``, both in ``gray`` pixels."""
    return quality_signs_many([gray], np.asarray(landmarks, np.float64)[None], np.asarray([box], np.float64),
                              models)[0]


def quality_signs_many(grays: list[np.ndarray], landmarks: np.ndarray, boxes: np.ndarray,
                       models: LandmarkModels) -> np.ndarray:
    """`quality_signs` of face i (``grays[i]``, ``landmarks[i]``, ``boxes[i]``), as N x 4."""
    p = np.asarray(landmarks, np.float64)
    signs = shape_signs_many(grays, p, boxes, models.implied_box)
    app = np.full(len(p), -20.0)  # degenerate landmarks look like no face
    good = np.flatnonzero(np.isfinite(procrustes_rms_many(p)))
    if len(good):
        app[good] = models.appearance(appearance_features_many([grays[i] for i in good], p[good]))[:, 0]
    return np.concatenate([app[:, None], signs], axis=1)


def quality_from_signs(signs: np.ndarray, models: LandmarkModels) -> float:
    """The calibrated probability in [0, 1] that the landmarks agree with the detector-box ones."""
    return float(qualities_from_signs(np.asarray(signs, np.float64)[None], models)[0])


def qualities_from_signs(signs: np.ndarray, models: LandmarkModels) -> np.ndarray:
    """`quality_from_signs` of each row of N x 4 ``signs``."""
    z = (np.asarray(signs, np.float64) * models.quality_weights).sum(axis=1) + models.quality_bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
