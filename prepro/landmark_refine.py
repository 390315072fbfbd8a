"""Refining the landmark network's fit (`--landmarks net`): supervised descent on what the image
shows around each point.

The network reads a 40-px crop and places the 68 points to about 1 px; dlib's predictor refines
its points on the image itself. Each refinement stage does the same with one linear map: around
every point it samples a small grid in the face's own frame (turned and scaled with the current
shape: the mean face's similarity to it, `face_pose`), reads it as normalised grey values and as
gradient-orientation histograms (`stage_features`), and moves all 68 points by a linear function of
those features (a ridge regression on FER2013 Training faces, kept to the leading modes of the moves:
`benchmarks/make_landmark_net.py`). The stages go from a coarse grid to a fine one.

Everything here is numpy and OpenCV on whole batches; a face gets the same points whatever batch it
is in (`MIN_BATCH`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from prepro.landmark_models import load_mean_shape

RADIUS = 2  # grey values on a (2 RADIUS + 1)^2 grid; gradients on a (2 RADIUS + 2)^2 one
BINS = 8  # signed gradient orientations, in the face's frame
GREY_EPS = 8.0  # grey levels added to a face's spread of samples: flat images stay near zero


def one_thread():
    """A context in which numpy's BLAS runs on one thread: the landmark step's rule (one thread per
    worker, the workers are the parallelism). The controller is made once: building one looks up
    every loaded library, which costs more than a chunk's small products (0.4 ms a call)."""
    return _controller().limit(limits=1, user_api="blas")


@lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# Products are padded to at least this many rows (the network's too): BLAS takes other code paths
# (other rounding) for products of a few rows, and a face must get the same landmarks whatever chunk
# it came in.
MIN_BATCH = 16


@dataclass(frozen=True)
class RefineStage:
    """One stage: points move by ``(features @ weights) @ modes + bias`` (in the face's frame,
    inter-ocular units: `to_image_moves`)."""

    spacing: float  # between grid samples, inter-ocular units
    weights: np.ndarray  # F x K float32
    modes: np.ndarray  # K x 136 float32: the moves' leading modes
    bias: np.ndarray  # 136 float32

    def moves(self, features: np.ndarray) -> np.ndarray:
        """N x 136 moves (x of the 68 points, then y) in the face's frame for N rows of features."""
        n = len(features)
        if n < MIN_BATCH:
            features = np.concatenate([features, np.zeros((MIN_BATCH - n, features.shape[1]), features.dtype)])
        return ((features @ self.weights) @ self.modes + self.bias)[:n]


def n_features() -> int:
    """The length of a face's feature row: per point, 4 cells of BINS orientations and the grey grid."""
    return 68 * (4 * BINS + (2 * RADIUS + 1) ** 2)


def face_pose(marks: np.ndarray) -> np.ndarray:
    """N complex factors a (rotation and scale) with marks ~ a * mean face + centroid (least squares)."""
    m = load_mean_shape()
    w = m[:, 0] + 1j * m[:, 1]
    z = marks[..., 0] + 1j * marks[..., 1]
    zc = z - z.mean(axis=1, keepdims=True)
    return (np.conj(w)[None] * zc).sum(axis=1) / float((np.abs(w) ** 2).sum())


def _samples(grays: list[np.ndarray], marks: np.ndarray, pose: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """N x 68 x len(offsets) bilinear grey samples at each point + pose * offset (edge pixels repeated)."""
    import cv2

    ar, ai = pose.real.astype(np.float32)[:, None, None], pose.imag.astype(np.float32)[:, None, None]
    orr, oi = offsets.real.astype(np.float32)[None, None], offsets.imag.astype(np.float32)[None, None]
    mx, my = marks[..., 0].astype(np.float32)[..., None], marks[..., 1].astype(np.float32)[..., None]
    xs, ys = mx + (ar * orr - ai * oi), my + (ar * oi + ai * orr)
    out = np.empty(xs.shape, np.float32)
    for i, gray in enumerate(grays):
        out[i] = cv2.remap(gray, xs[i], ys[i], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def _grid(side: int, spacing: float) -> np.ndarray:
    """A side x side grid of complex offsets centred on 0, rows top to bottom."""
    g = (np.arange(side) - (side - 1) / 2) * spacing
    return (g[None, :] + 1j * g[:, None]).ravel()


def stage_features(grays: list[np.ndarray], marks: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(N x `n_features` float32 features, N complex poses) of faces whose points are ``marks`` (N x 68
    x 2, in ``grays[i]``'s pixels): per point, gradient-orientation histograms over the 2x2 cells of a
    grid, each point's normalised, then the grey grid, normalised over the face."""
    n = len(marks)
    pose = face_pose(marks)
    side, small = 2 * RADIUS + 2, 2 * RADIUS + 1
    both = _samples(grays, marks, pose, np.concatenate([_grid(side, spacing), _grid(small, spacing)]))
    s = both[..., :side * side].reshape(n, 68, side, side)
    gx = s[..., 1:-1, 2:] - s[..., 1:-1, :-2]
    gy = s[..., 2:, 1:-1] - s[..., :-2, 1:-1]
    inner = side - 2
    cell = (np.arange(inner) >= inner // 2).astype(np.intp)
    index = _octants(gx, gy) + ((cell[:, None] * 2 + cell[None, :]) * BINS)[None, None]
    index += (np.arange(n * 68) * 4 * BINS).reshape(n, 68, 1, 1)
    hist = np.bincount(index.ravel(), weights=np.sqrt(gx * gx + gy * gy).ravel(), minlength=n * 68 * 4 * BINS)
    hist = hist.reshape(n, 68, 4 * BINS)
    hist /= np.sqrt((hist * hist).sum(axis=2, keepdims=True)) + 1.0
    grey = both[..., side * side:].reshape(n, -1)
    grey = (grey - grey.mean(axis=1, keepdims=True)) / (grey.std(axis=1, keepdims=True) + GREY_EPS)
    return np.concatenate([hist.reshape(n, -1).astype(np.float32), grey], axis=1), pose


# The bin of (gy >= 0, gx < 0, |gy| > |gx|) read as the bits 4, 2, 1 of a code.
_OCTANT_OF_CODE = np.array([3, 2, 0, 1, 4, 5, 7, 6], np.intp)


def _octants(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The signed orientation bin (0..7, 45 degrees each from -180) of each gradient, by comparisons
    (a fifth of arctan2's cost; on a boundary the bin is the one these comparisons give)."""
    code = (gy >= 0).astype(np.uint8) * np.uint8(4)
    code += (gx < 0).astype(np.uint8) * np.uint8(2)
    code += np.abs(gy) > np.abs(gx)
    return _OCTANT_OF_CODE[code]


def to_image_moves(moves: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """N x 68 x 2 image-pixel moves of N x 136 moves in the faces' frames."""
    c = (moves[:, :68] + 1j * moves[:, 68:]) * pose[:, None]
    return np.stack([c.real, c.imag], axis=-1)


def to_face_moves(moves: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """`to_image_moves` undone: N x 68 x 2 image moves as N x 136 moves in the faces' frames."""
    c = (moves[..., 0] + 1j * moves[..., 1]) / pose[:, None]
    return np.concatenate([c.real, c.imag], axis=1)


def refine(grays: list[np.ndarray], marks: np.ndarray,
           stages: tuple[RefineStage, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(``marks`` (N x 68 x 2 in ``grays[i]``'s pixels) moved by each stage in turn, N x 2 move sizes:
    the whole refinement's and the last stage's mean point move, inter-ocular units: what the error
    head reads beside the network). Faces whose points are not finite, or collapsed onto one spot,
    are left as they are (moves 0)."""
    out = np.array(marks, dtype=np.float64)
    sizes = np.zeros((len(out), 2))
    ok = np.isfinite(out).all(axis=(1, 2))
    ok[ok] = np.abs(face_pose(out[ok])) > 1e-6
    if not stages or not ok.any():
        return out, sizes
    idx = np.flatnonzero(ok)
    kept = [grays[i] for i in idx]
    x = out[idx]
    with one_thread():
        for stage in stages:
            feats, pose = stage_features(kept, x, stage.spacing)
            step = to_image_moves(stage.moves(feats).astype(np.float64), pose)
            x = x + step
    scale = np.abs(pose)[:, None]
    sizes[idx] = np.stack([(np.linalg.norm(x - out[idx], axis=2) / scale).mean(axis=1),
                           (np.linalg.norm(step, axis=2) / scale).mean(axis=1)], axis=1)
    out[idx] = x
    return out, sizes
