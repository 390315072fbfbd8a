"""Block geometry: the eye-and-eyebrow, mouth and aligned-face blocks cut from 68 landmarks.

Coordinates follow `prepro.landmarks`: landmarks are pixel indices of the ORIGINAL image (pixel
centres at integers). Each block comes with a 2x3 affine matrix mapping original-image
coordinates to block pixel coordinates (OpenCV convention: block pixel (i, j) has its centre at
(i, j)), so landmarks and boxes can be drawn on blocks.

How a block is placed: the frame is rotated about the eye midpoint so the eyes are level (if
``rotate``); the block's landmarks' bounding box in that frame is grown by ``margin`` times the
inter-ocular distance on every side, then grown (never shrunk) along one axis to the output aspect
ratio, so nothing is stretched; one ``cv2.warpAffine`` maps the source straight into the block.
Parts of a block past the image border are filled per ``pad``, never wrapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from prepro.cut_settings import BlockConfig
from prepro.errors import SampleError
from prepro.landmarks import EYES_BLOCK_IDX, MOUTH_BLOCK_IDX

# Below this linear scale factor a bilinear warp aliases; the source region is first reduced
# with an area filter by an integer factor.
_AREA_PREFILTER_BELOW = 0.5
_MIN_IOD = 0.5  # pixels: eye centres closer than this are degenerate landmarks
_EYE_MEANS = np.zeros((2, 68))  # row 0 averages points 36-41 (right eye), row 1 points 42-47
_EYE_MEANS[0, 36:42] = _EYE_MEANS[1, 42:48] = 1.0 / 6


class BlockError(SampleError):
    """Landmarks from which no block can be cut (NaNs, collapsed eyes); the message says why."""


@dataclass
class Blocks:
    eyes: np.ndarray  # uint8 (H, W) = cfg.eyes_size
    mouth: np.ndarray  # uint8 cfg.mouth_size
    face: np.ndarray  # uint8 cfg.face_size
    eyes_affine: np.ndarray  # 2x3 float32: original-image coords -> eyes block pixel coords
    mouth_affine: np.ndarray
    face_affine: np.ndarray


def cutting_geometry(cfg: BlockConfig) -> dict[str, Any]:
    """Everything needed to cut the blocks of ``cfg`` without faceblocks (`cut_blocks` in words
    and numbers), JSON-ready: written into exported models' metadata."""
    return {
        "landmarks": "dlib's 68 points, iBUG 300-W order, 0-based, [x, y] in original-image pixels with "
                     "pixel centres at integers",
        "box": "left, top, right, bottom in original-image pixels, right and bottom exclusive",
        "eye_centres": {"right": list(range(36, 42)), "left": list(range(42, 48))},
        "regions": {"eyes": {"landmarks": [int(i) for i in EYES_BLOCK_IDX], "margin": cfg.eyes_margin,
                             "size": list(cfg.eyes_size)},
                    "mouth": {"landmarks": [int(i) for i in MOUTH_BLOCK_IDX], "margin": cfg.mouth_margin,
                              "size": list(cfg.mouth_size)},
                    "face": {"landmarks": list(range(68)), "margin": cfg.face_margin, "size": list(cfg.face_size)}},
        "size_order": "height, width",
        "rotate": cfg.rotate,
        "rotation": "about the midpoint c of the eye centres, by the angle of the right-to-left eye vector, so the "
                    "eyes are level: q = R (p - c), R = [[cos, sin], [-sin, cos]]" if cfg.rotate else "none",
        "margin_unit": "the inter-ocular distance (between the eye centres)",
        "extent": "the region's landmarks' bounding box in the levelled frame, grown by margin on every side, then "
                  "grown about its centre (never shrunk) along one axis to the output aspect ratio",
        "pixels": "block pixel (i, j) has its centre at levelled (x0 + (i + 0.5) / k, y0 + (j + 0.5) / k), k = "
                  "output width / extent width",
        "interpolation": f"bilinear (cv2.warpAffine INTER_LINEAR); below {_AREA_PREFILTER_BELOW} block pixels per "
                         "source pixel, the source region is first reduced by the integer n = int(1 / that) with "
                         "cv2.INTER_AREA",
        "pad": cfg.pad,
        "pad_opencv": "cv2.BORDER_REPLICATE" if cfg.pad == "replicate" else "cv2.BORDER_CONSTANT, value 0",
        "grey": "cv2.cvtColor(BGR, cv2.COLOR_BGR2GRAY), uint8",
    }


def cut_blocks(gray: np.ndarray, landmarks: np.ndarray, cfg: BlockConfig, scale: float = 1.0) -> Blocks:
    """Cut the three blocks from ``gray``, a decode of the original image at ``scale`` (decoded
    size / original size), using 68 ``landmarks`` in original-image coordinates."""
    p = np.asarray(landmarks, dtype=np.float64)
    if p.shape != (68, 2):
        raise BlockError(f"expected 68x2 landmarks, got shape {p.shape}")
    blocks = cut_blocks_many([gray], p[None], cfg, [scale])[0]
    if isinstance(blocks, BlockError):
        raise blocks
    return blocks


def cut_blocks_many(grays: list[np.ndarray], landmarks: np.ndarray, cfg: BlockConfig,
                    scales: list[float]) -> list[Blocks | BlockError]:
    """`cut_blocks` of face i (``grays[i]`` at ``scales[i]``, ``landmarks[i]`` of the N x 68 x 2):
    the same blocks, the geometry of all faces computed in one pass of array operations; a face
    whose landmarks cannot place a block gets its `BlockError` in its place."""
    import cv2

    for gray, scale in zip(grays, scales):
        if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2 or gray.size == 0:
            raise ValueError("gray must be a non-empty 2-D uint8 array")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
    p = np.asarray(landmarks, dtype=np.float64).reshape(len(grays), 68, 2)
    inv_s = 1.0 / np.asarray(scales, dtype=np.float64)
    maps, errors = _block_maps(p, cfg, inv_s)
    border = cv2.BORDER_REPLICATE if cfg.pad == "replicate" else cv2.BORDER_CONSTANT
    sizes = (cfg.eyes_size, cfg.mouth_size, cfg.face_size)
    out: list[Blocks | BlockError] = []
    for i, gray in enumerate(grays):
        if errors[i] is not None:
            out.append(errors[i])
            continue
        m_orig, m_dec, factor = maps[0][i], maps[1][i], maps[2][i]
        warped = [_warp(cv2, gray, m_dec[k], factor[k], w, h, border) for k, (h, w) in enumerate(sizes)]
        out.append(Blocks(eyes=warped[0], mouth=warped[1], face=warped[2],
                          eyes_affine=m_orig[0], mouth_affine=m_orig[1], face_affine=m_orig[2]))
    return out


def _block_maps(p: np.ndarray, cfg: BlockConfig, inv_s: np.ndarray) -> tuple[tuple, list]:
    """For N faces' landmarks ``p`` (N x 68 x 2, original pixels) of images decoded at 1 / ``inv_s``:
    ((N x 3 x 2 x 3 float32 original-pixel maps, N x 3 x 2 x 3 decoded-pixel maps, N x 3 scale
    factors) of the eyes, mouth and face blocks, and each face's `BlockError` or None).

    Array for array the arithmetic of one face at a time, in the same order, so every face gets
    the same numbers whatever batch it is in."""
    n = len(p)
    finite = np.isfinite(p).all(axis=(1, 2))
    p = np.where(finite[:, None, None], p, 0.0)  # no arithmetic on NaN or infinity (nor its warnings)
    # The eye centres face by face: a matrix product's summation order depends on its shape.
    eyes = np.array([_EYE_MEANS @ q for q in p]).reshape(n, 2, 2)
    dx, dy = eyes[:, 1, 0] - eyes[:, 0, 0], eyes[:, 1, 1] - eyes[:, 0, 1]
    iod = np.array([math.hypot(a, b) for a, b in zip(dx.tolist(), dy.tolist())])
    errors: list = [None if ok and d >= _MIN_IOD else
                    BlockError("landmarks contain NaN or infinite values") if not ok else
                    BlockError(f"degenerate landmarks: inter-ocular distance {d:.2f} px")
                    for ok, d in zip(finite.tolist(), iod.tolist())]
    iod = np.where([e is None for e in errors], iod, 1.0)  # the bad faces' numbers are never used
    cx, cy = 0.5 * (eyes[:, 0, 0] + eyes[:, 1, 0]), 0.5 * (eyes[:, 0, 1] + eyes[:, 1, 1])
    cos, sin = (dx / iod, dy / iod) if cfg.rotate else (np.ones(n), np.zeros(n))
    # Rotated frame about the eye midpoint: q = R (p - c), R = [[cos, sin], [-sin, cos]] (levels the eyes).
    qx = (p[:, :, 0] - cx[:, None]) * cos[:, None] + (p[:, :, 1] - cy[:, None]) * sin[:, None]
    qy = (p[:, :, 1] - cy[:, None]) * cos[:, None] - (p[:, :, 0] - cx[:, None]) * sin[:, None]
    t = 0.5 * inv_s - 0.5  # reduced decode: original x = x_dec * inv_s + t
    m_orig, m_dec, factors = np.empty((n, 3, 2, 3)), np.empty((n, 3, 2, 3)), np.empty((n, 3))
    for k, (idx, (h_out, w_out), margin) in enumerate(((EYES_BLOCK_IDX, cfg.eyes_size, cfg.eyes_margin),
                                                       (MOUTH_BLOCK_IDX, cfg.mouth_size, cfg.mouth_margin),
                                                       (slice(None), cfg.face_size, cfg.face_margin))):
        grow = margin * iod
        x0, y0 = qx[:, idx].min(axis=1) - grow, qy[:, idx].min(axis=1) - grow
        x1, y1 = qx[:, idx].max(axis=1) + grow, qy[:, idx].max(axis=1) + grow
        bw, bh = np.maximum(x1 - x0, 1e-6), np.maximum(y1 - y0, 1e-6)
        narrow = bw * h_out < bh * w_out  # too narrow for the output aspect: widen about the centre
        x0 = np.where(narrow, x0 - 0.5 * (bh * w_out / h_out - bw), x0)
        y0 = np.where(narrow, y0, y0 - 0.5 * (bw * h_out / w_out - bh))  # else taller about the centre
        bw = np.where(narrow, bh * w_out / h_out, bw)
        kk = w_out / bw  # block pixels per original pixel, the same on both axes
        # Block pixel i has its centre at rotated x0 + (i + 0.5) / k:
        # u = k (cos (x - cx) + sin (y - cy) - x0) - 0.5, v = k (-sin (x - cx) + cos (y - cy) - y0) - 0.5.
        a, b = kk * cos, kk * sin
        ou = -a * cx - b * cy - kk * x0 - 0.5
        ov = b * cx - a * cy - kk * y0 - 0.5
        m_orig[:, k] = np.stack([np.stack([a, b, ou], axis=1), np.stack([-b, a, ov], axis=1)], axis=1)
        # The same map from decoded pixels: substitute x = x_dec * inv_s + t.
        m_dec[:, k] = np.stack([np.stack([a * inv_s, b * inv_s, ou + (a + b) * t], axis=1),
                                np.stack([-b * inv_s, a * inv_s, ov + (a - b) * t], axis=1)], axis=1)
        factors[:, k] = kk * inv_s
    return (m_orig.astype(np.float32), m_dec, factors), errors


def _warp(cv2: Any, src: np.ndarray, m: np.ndarray, factor: float, w: int, h: int,
          border: int) -> np.ndarray:
    """warpAffine ``src`` by ``m`` into (h, w); heavy downscales first area-reduce the region used."""
    if factor < _AREA_PREFILTER_BELOW:
        n = int(1.0 / factor)  # integer reduction: keeps the block at >= 1 source pixel per output pixel
        # Source region the block reads (its corners through the inverse map), plus a filter margin.
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) - (0.5, 0.5, 0)
        xy = corners @ inv.T
        sh, sw = src.shape
        x0 = max(int(math.floor(xy[:, 0].min())) - n, 0)
        y0 = max(int(math.floor(xy[:, 1].min())) - n, 0)
        x1 = min(int(math.ceil(xy[:, 0].max())) + n + 1, sw)
        y1 = min(int(math.ceil(xy[:, 1].max())) + n + 1, sh)
        if x1 - x0 >= 2 * n and y1 - y0 >= 2 * n:
            # Align the crop to multiples of n so reduced pixel j covers source x0 + [n j, n j + n).
            x1 = x0 + (x1 - x0) // n * n
            y1 = y0 + (y1 - y0) // n * n
            roi = cv2.resize(src[y0:y1, x0:x1], ((x1 - x0) // n, (y1 - y0) // n),
                             interpolation=cv2.INTER_AREA)
            # Source pixel x maps to reduced (x - x0 + 0.5) / n - 0.5; compose its inverse into m.
            a = m[:, :2] * n
            b = m[:, :2] @ (x0 + 0.5 * n - 0.5, y0 + 0.5 * n - 0.5) + m[:, 2]
            m = np.hstack([a, b[:, None]])
            src = roi
    return cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
