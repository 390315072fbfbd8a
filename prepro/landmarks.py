"""dlib's 68 facial landmarks: the named regions, and fitting the landmark model (its file:
`prepro.model_files`) to a face.

Conventions (the same everywhere in faceblocks):

* Landmarks are pixel positions with pixel centres at the integers. In the shards and in every
  public result they are in pixels of the ORIGINAL image; functions here that take a ``gray``
  array work in that array's pixels (`prepro.faces` converts).
* A box is ``(left, top, right, bottom)`` in floats, right and bottom exclusive (the whole image is
  ``(0, 0, width, height)``).

The 68 points follow the iBUG 300-W convention (0-based); the regions are the named slices below.

Fitting: the landmark model (dlib's ``shape_predictor``) starts from a box. With a detector box,
that box is used as it is. A face crop without one (`--face aligned`, and `auto` where the
detector finds nothing) starts from the box the HOG detector would most likely have given
(`prepro.landmark_models.estimate_start_box`); when the quality of that fit is doubtful, two more
starts are tried (the box the first landmarks imply, and the whole image) and the fit of highest
quality is kept. Nothing heavy is imported at module import: dlib loads on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from prepro.errors import InputError
from prepro import landmark_models
from prepro.model_files import LANDMARK_MODEL_TERMS, LandmarkModelFile  # noqa: F401 - re-exported

JAW = slice(0, 17)
RIGHT_EYEBROW = slice(17, 22)  # the subject's right: left side of the image
LEFT_EYEBROW = slice(22, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_TIP = slice(31, 36)
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
MOUTH_OUTER = slice(48, 60)
MOUTH_INNER = slice(60, 68)

REGIONS: dict[str, slice] = {
    "jaw": JAW,
    "right_eyebrow": RIGHT_EYEBROW,
    "left_eyebrow": LEFT_EYEBROW,
    "nose_bridge": NOSE_BRIDGE,
    "nose_tip": NOSE_TIP,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "mouth_outer": MOUTH_OUTER,
    "mouth_inner": MOUTH_INNER,
}

EYES_BLOCK_IDX = np.r_[RIGHT_EYEBROW, LEFT_EYEBROW, RIGHT_EYE, LEFT_EYE]  # brows and eyes
MOUTH_BLOCK_IDX = np.r_[MOUTH_OUTER, MOUTH_INNER]  # outer and inner lip contours

SECOND_LOOK_BELOW = 0.5  # a crop's fit of lower quality gets a second look from other starts


def dlib_rects(boxes: Any, grays: list[np.ndarray]) -> list[Any]:
    """dlib rectangles of the (left, top, right, bottom) ``boxes``, box i in ``grays[i]``'s pixels;
    a box that is not finite is an InputError."""
    import dlib

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lim = 8.0 * np.array([max(g.shape) for g in grays], dtype=np.float64)[:, None]
    b = np.minimum(np.maximum(b, -lim), lim)  # a box far outside the image means nothing; keep dlib's ints sane
    bad = np.flatnonzero(~np.isfinite(b).all(axis=1))
    if len(bad):
        raise InputError(f"face box {tuple(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[bad[0]].tolist())} is not finite")
    l, t, r, bt = np.rint(b).astype(np.int64).T  # round half to even, as Python's round
    # dlib rectangles are inclusive: an exclusive right edge r is pixel r - 1.
    return [dlib.rectangle(*e) for e in zip(l.tolist(), t.tolist(), np.maximum(r - 1, l).tolist(),
                                             np.maximum(bt - 1, t).tolist())]


def landmark_error(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance between two sets of 68 points, in units of the reference's inter-ocular
    distance (eye centre to eye centre): the agreement measure of the landmark benchmark, and what
    the quality model is calibrated against."""
    ref = np.asarray(reference, dtype=np.float64)
    iod = float(np.linalg.norm(ref[RIGHT_EYE].mean(0) - ref[LEFT_EYE].mean(0)))
    return float(np.linalg.norm(np.asarray(landmarks) - ref, axis=1).mean() / max(iod, 1e-6))


def predict_landmarks(shape_model: Any, gray: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """68x2 float64 landmarks in ``gray`` pixels, started from ``box`` (``gray`` pixels)."""
    return predict_landmarks_many(shape_model, [gray], [box])[0]


def predict_landmarks_many(shape_model: Any, grays: list[np.ndarray], boxes: Any) -> np.ndarray:
    """N x 68 x 2 float64 landmarks, face i started from ``boxes[i]`` in ``grays[i]``'s pixels."""
    shapes = [shape_model(g, r) for g, r in zip(grays, dlib_rects(boxes, grays))]
    if not shapes:
        return np.zeros((0, 68, 2))
    # dlib gives one Python object per point; its text form "points[(x, y), ...]" is read for all
    # faces at once instead (a third of the cost).
    text = ",".join([str(s.parts())[7:-2] for s in shapes]).encode("ascii").translate(None, b"() ")
    return np.array(text.split(b","), dtype=np.float64).reshape(len(shapes), 68, 2)


@dataclass
class Fit:
    """Landmarks fitted in one image, all in that image's pixels."""

    box: tuple[float, float, float, float]  # the box the landmarks were started from
    landmarks: np.ndarray  # 68x2 float64
    quality: float  # probability in [0, 1] that they agree with the detector-box landmarks


def fit_from_box(gray: np.ndarray, box: tuple[float, float, float, float], shape_model: Any) -> Fit:
    """Landmarks started from a known box (a detector's or a given one), with their quality."""
    return fits_from_boxes([gray], [box], shape_model)[0]


def fits_from_boxes(grays: list[np.ndarray], boxes: Any, shape_model: Any) -> list[Fit]:
    """`fit_from_box` of face i in ``grays[i]`` from ``boxes[i]``: the predictor per face, the
    quality for all faces in one pass."""
    if not len(grays):
        return []
    models = landmark_models.load_landmark_models()
    boxes = [tuple(float(v) for v in b) for b in boxes]
    marks = predict_landmarks_many(shape_model, grays, boxes)
    signs = landmark_models.quality_signs_many(grays, marks, np.asarray(boxes), models)
    quality = landmark_models.qualities_from_signs(signs, models)
    return [Fit(b, m, float(q)) for b, m, q in zip(boxes, marks, quality)]


def fit_crop(gray: np.ndarray, shape_model: Any, second_look: bool = False) -> Fit:
    """Landmarks of the face filling the crop ``gray``, without a detector (see the module doc);
    ``second_look=False`` keeps the first fit however doubtful (faster, less often right)."""
    return fit_crops([gray], shape_model, second_look)[0]


def fit_crops(grays: list[np.ndarray], shape_model: Any, second_look: bool = False) -> list[Fit]:
    """`fit_crop` of each crop: start boxes, fits and qualities computed for all crops at once."""
    if not len(grays):
        return []
    models = landmark_models.load_landmark_models()
    first = fits_from_boxes(grays, landmark_models.estimate_start_boxes(grays, models), shape_model)
    doubtful = [i for i, f in enumerate(first) if f.quality < SECOND_LOOK_BELOW] if second_look else []
    if not doubtful:
        return first
    # Two more starts per doubtful crop: the box its first landmarks imply, and the whole image.
    starts = [landmark_models.implied_box(first[i].landmarks, models.implied_box) for i in doubtful]
    starts += [(0.0, 0.0, float(grays[i].shape[1]), float(grays[i].shape[0])) for i in doubtful]
    others = fits_from_boxes([grays[i] for i in doubtful] * 2, starts, shape_model)
    best = list(first)
    for k, i in enumerate(doubtful):
        best[i] = max([first[i], others[k], others[k + len(doubtful)]], key=lambda f: f.quality)
    return best
