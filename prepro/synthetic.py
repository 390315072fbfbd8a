"""A small synthetic, labelled sample of faces for the demo and for tests: no download needed.

It starts from scikit-image's public-domain astronaut photograph (Eileen Collins, NASA), finds its
68 landmarks, and for each expression moves the landmarks the way that expression moves them
(brows, eyelids, lips, jaw), warping the photo with a smooth thin-plate field. Each image then gets
its own pose, scale, lighting, noise and expression strength. The result is for demonstrating and
testing the pipeline only: it is one identity, and no claim about real expression recognition
can be drawn from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prepro.cut_settings import CutSettings
from prepro.faces import FaceCutter
from prepro.model_files import LandmarkModelFile

# Landmark displacements per expression, in inter-ocular units (x right, y down). Keys are
# 0-based iBUG-68 point indices.
_BROW_R, _BROW_L = range(17, 22), range(22, 27)
_INNER_BROW = (20, 21, 22, 23)
_UPPER_LID = (37, 38, 43, 44)
_LOWER_LID = (40, 41, 46, 47)
_UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
_LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
_JAW_LOW = (5, 6, 7, 8, 9, 10, 11)


def _moves() -> dict[str, dict[int, tuple[float, float]]]:
    m: dict[str, dict[int, tuple[float, float]]] = {"neutral": {}}

    def add(name: str, idx, dx: float, dy: float) -> None:
        d = m.setdefault(name, {})
        for i in idx:
            ox, oy = d.get(i, (0.0, 0.0))
            d[i] = (ox + dx, oy + dy)

    add("happy", (48,), -0.10, -0.12); add("happy", (54,), 0.10, -0.12)
    add("happy", (49, 53, 60, 64), 0.0, -0.06); add("happy", _LOWER_LID, 0.0, -0.04)
    add("happy", _LOWER_LIP, 0.0, 0.04)
    add("sad", (48,), 0.03, 0.12); add("sad", (54,), -0.03, 0.12); add("sad", (59, 55), 0.0, 0.05)
    add("sad", _INNER_BROW, 0.0, -0.10); add("sad", (17, 26), 0.0, 0.04)
    add("surprise", list(_BROW_R) + list(_BROW_L), 0.0, -0.18); add("surprise", _UPPER_LID, 0.0, -0.05)
    add("surprise", _LOWER_LIP, 0.0, 0.30); add("surprise", _JAW_LOW, 0.0, 0.22)
    add("surprise", (48,), 0.05, 0.05); add("surprise", (54,), -0.05, 0.05)
    add("angry", list(_BROW_R) + list(_BROW_L), 0.0, 0.07); add("angry", (20, 21), 0.05, 0.08)
    add("angry", (22, 23), -0.05, 0.08); add("angry", _UPPER_LID, 0.0, 0.03)
    add("angry", _UPPER_LIP, 0.0, 0.03); add("angry", _LOWER_LIP, 0.0, -0.05)
    add("fear", list(_BROW_R) + list(_BROW_L), 0.0, -0.10); add("fear", (20, 21), 0.04, -0.04)
    add("fear", (22, 23), -0.04, -0.04); add("fear", _UPPER_LID, 0.0, -0.04)
    add("fear", (48,), -0.12, 0.03); add("fear", (54,), 0.12, 0.03); add("fear", _LOWER_LIP, 0.0, 0.10)
    add("disgust", _UPPER_LIP, 0.0, -0.09); add("disgust", (31, 32, 33, 34, 35), 0.0, -0.04)
    add("disgust", _INNER_BROW, 0.0, 0.08); add("disgust", (48,), 0.03, 0.03)
    add("disgust", (54,), -0.03, 0.03); add("disgust", _LOWER_LID, 0.0, -0.04)
    return m


EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _base_face() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo in grayscale, cropped around the face, and its 68 landmarks."""
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    crop = np.ascontiguousarray(gray[10:290, 80:360])  # the face with some background around it
    cut = FaceCutter(CutSettings(face_mode="detect"), LandmarkModelFile.default()).cut(crop)
    if cut.failure:
        raise RuntimeError(f"the astronaut's face was not found ({cut.failure})")  # a broken install, not user input
    return crop, cut.faces[0].face.landmarks.astype(np.float64)


def _warp(img: np.ndarray, src: np.ndarray, dst: np.ndarray, step: int = 8) -> np.ndarray:
    """Warp ``img`` so that points ``src`` move to ``dst`` (thin-plate field, borders fixed)."""
    import cv2
    from scipy.interpolate import RBFInterpolator

    h, w = img.shape
    border = np.array([(x, y) for x in np.linspace(0, w - 1, 6) for y in (0, h - 1)]
                      + [(x, y) for y in np.linspace(0, h - 1, 6)[1:-1] for x in (0, w - 1)])
    q = np.vstack([dst, border])
    disp = np.vstack([src - dst, np.zeros_like(border)])  # backward map: output -> source
    rbf = RBFInterpolator(q, disp, kernel="thin_plate_spline", smoothing=1e-3)
    gy, gx = np.mgrid[0:h:step, 0:w:step]
    coarse = rbf(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gy.shape + (2,))
    flow = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def make_sample(out_dir: str | Path, per_class: int = 60, size: int = 160, seed: int = 0,
                expressions: tuple[str, ...] = EXPRESSIONS) -> dict[str, int]:
    """Write ``per_class`` PNG images per expression to ``out_dir/<expression>/``.

    Returns the count per expression. Deterministic for a given seed.
    """
    import cv2

    unknown = [e for e in expressions if e not in EXPRESSIONS]
    if unknown:
        raise ValueError(f"unknown expression(s) {unknown}; allowed: {', '.join(EXPRESSIONS)}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out = Path(out_dir)
    base, pts = _base_face()
    eye_r, eye_l = pts[36:42].mean(0), pts[42:48].mean(0)
    iod = float(np.linalg.norm(eye_l - eye_r))
    centre = pts.mean(0)
    moves = _moves()
    rng = np.random.default_rng(seed)
    counts = {}
    for label in expressions:
        (out / label).mkdir(parents=True, exist_ok=True)
        move = np.zeros_like(pts)
        for i, (dx, dy) in moves[label].items():
            move[i] = (dx * iod, dy * iod)
        for k in range(per_class):
            strength = rng.uniform(0.7, 1.3)
            # a little per-image face-shape change, so that no two images share exact geometry
            jitter = rng.normal(0, 0.015 * iod, size=pts.shape)
            dst = pts + strength * move + jitter
            img = _warp(base, pts, dst)
            angle = rng.uniform(-12, 12)
            scale = rng.uniform(0.85, 1.15) * size / (3.2 * iod)
            m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
            m[:, 2] += np.array([size / 2, size / 2]) - centre + rng.uniform(-0.06, 0.06, 2) * size
            img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA,
                                 borderMode=cv2.BORDER_REFLECT)
            gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
            gamma = rng.uniform(0.8, 1.25)
            f = np.clip((img.astype(np.float32) / 255.0) ** gamma * 255.0 * gain + bias, 0, 255)
            f += rng.normal(0, rng.uniform(0, 6), f.shape)
            if rng.random() < 0.5:
                f = f[:, ::-1]
            cv2.imwrite(str(out / label / f"{label}_{k:04d}.png"), np.clip(f, 0, 255).astype(np.uint8))
        counts[label] = per_class
    return counts
