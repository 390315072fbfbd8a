"""Face detection with dlib's HOG detector or its MMOD CNN detector.

Both detectors find faces of about 80 pixels and larger, so every image is brought to a scale at
which the smallest face wanted reaches that size:

* a **photo** is scaled by ``80 / smallest face``, where the smallest face wanted is the larger of
  ``min_face`` pixels (of the original image) and ``min_face_frac`` of the photo's longer side:
  small faces in small photos are found (a 500 px group photo is upsampled 2x), and large photos
  are not searched for faces too small to matter there (a 4,000 px photo is scaled down);
* a **small image** (longest side at most ``small_image_side``) is a face crop: it gets a black
  border of a quarter of its side (HOG needs margin around a face to see its outline) and is
  enlarged so that its side spans ``CROP_SIDE`` pixels.

Boxes are ``(left, top, right, bottom)`` floats in the pixels of the image passed in, right and
bottom exclusive, unclamped (a face at the border may reach past it). The CNN detector's boxes are
tighter than HOG's and sit lower on the face; they are mapped onto HOG's geometry
(`CNN_TO_HOG`), because the 68-point landmark model was trained on HOG boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from prepro.cut_settings import DetectorSettings
from prepro.model_files import CNN_MODEL_FILE, find_model_file

COARSE_REGION = 1.0  # coarse-fine: the fine scale searches this many face sides around each coarse face
WINDOW = 80  # pixels: the face size both detectors are built for
CROP_PAD = 0.25  # border around a face crop, as a fraction of its side
CROP_SIDE = 108  # a face crop's side after enlarging (about 1.35 detector windows)
MAX_UPSAMPLE = 4.0  # never enlarge a photo more than this
MAX_DETECT_PIXELS = 2_500_000  # the scaled image is kept below this many pixels (cost grows with it)
# CNN box -> HOG-like box: centre shift and size, in units of the CNN box's width: the medians over
# 303 FER2013 PublicTest faces both detectors found (benchmarks/bench_detection.py calibrate).
CNN_TO_HOG = {"dx": 0.031, "dy": 0.069, "size": 1.087}


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # left, top, right, bottom in the given image's pixels
    score: float  # detector confidence (HOG: SVM margin; CNN: MMOD confidence)
    detector: str  # "hog" or "cnn"

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@lru_cache(maxsize=2)
def _load_detector(kind: str) -> Any:
    import dlib

    if kind == "hog":
        return dlib.get_frontal_face_detector()
    return dlib.cnn_face_detection_model_v1(str(find_model_file(CNN_MODEL_FILE)))


def detection_scale(height: int, width: int, decode_scale: float, s: DetectorSettings) -> float:
    """The factor a photo of ``height`` x ``width`` decoded pixels (``decode_scale`` of the
    original) is resized by before detection."""
    smallest = max(s.min_face * decode_scale, s.min_face_frac * max(height, width), 1.0)
    k = min(WINDOW / smallest, MAX_UPSAMPLE)
    if height * width * k * k > MAX_DETECT_PIXELS:
        k = math.sqrt(MAX_DETECT_PIXELS / (height * width))
    return k


def load_detectors(settings: DetectorSettings) -> None:
    """Load the detectors ``settings`` use now (once per process; see `FaceCutter.load_models`)."""
    for kind in ("hog", "cnn") if settings.detector == "hog+cnn" else (settings.detector,):
        _load_detector(kind)


def detect_faces(gray: np.ndarray, settings: DetectorSettings, decode_scale: float = 1.0) -> list[Detection]:
    """Every face the detector finds in ``gray`` (uint8, 2-D; ``decode_scale`` of the original
    image), largest first; with ``hog+cnn`` the CNN's faces where HOG finds none."""
    if settings.detector == "hog+cnn":
        return (_detect_with(gray, "hog", settings, decode_scale)
                or _detect_with(gray, "cnn", settings, decode_scale))
    return _detect_with(gray, settings.detector, settings, decode_scale)


def _detect_with(gray: np.ndarray, kind: str, settings: DetectorSettings, decode_scale: float) -> list[Detection]:
    import cv2

    h, w = gray.shape
    if max(h, w) <= settings.small_image_side:
        pad = round(CROP_PAD * max(h, w))
        framed = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        dets = _detect_scaled(framed, kind, CROP_SIDE / max(h, w), (pad, pad))
    else:
        k = detection_scale(h, w, decode_scale, settings)
        # Coarse-fine only where the smallest face wanted is a fraction of the photo (a large photo):
        # a small photo is searched for faces of a few dozen pixels, which a coarse pass cannot see.
        relative = settings.min_face_frac * max(h, w) > settings.min_face * decode_scale
        dets = (_coarse_then_fine(gray, kind, k) if settings.search == "coarse-fine" and relative
                else _detect_scaled(gray, kind, k))
    return sorted(dets, key=lambda d: d.area, reverse=True)


def _detect_scaled(img: np.ndarray, kind: str, k: float, origin: tuple[float, float] = (0.0, 0.0)) -> list[Detection]:
    """The faces in ``img`` resized by ``k``, in the pixels of the image whose pixel ``origin``
    (x, y) is ``img``'s top left (a framed crop: minus its border; a region: plus its corner)."""
    import cv2

    ih, iw = img.shape
    if k != 1.0:
        size = (max(1, round(iw * k)), max(1, round(ih * k)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    sx, sy = img.shape[1] / iw, img.shape[0] / ih
    ox, oy = origin
    # Detector pixels back to the given image: undo the scale, then the border or corner.
    return [Detection((l / sx - ox, t / sy - oy, r / sx - ox, b / sy - oy), score, kind)
            for l, t, r, b, score in _run(kind, img)]


def _coarse_then_fine(gray: np.ndarray, kind: str, k: float) -> list[Detection]:
    """`search = coarse-fine`: the whole photo at half the scale ``k`` (a quarter of the pixels;
    it finds faces of twice the smallest size and up), then scale ``k`` only in the regions around
    the faces found (the whole photo when none are)."""
    coarse = _detect_scaled(gray, kind, k / 2)
    if not coarse:
        return _detect_scaled(gray, kind, k)
    h, w = gray.shape
    fine: list[Detection] = []
    for x0, y0, x1, y1 in _merged_regions([_around(d.box, w, h) for d in coarse]):
        fine += _detect_scaled(gray[y0:y1, x0:x1], kind, k, (-x0, -y0))
    found = _distinct(fine)
    return found + [d for d in coarse if all(_iou(d.box, f.box) < 0.3 for f in found)]


def _around(box: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    side = box[2] - box[0]
    m = COARSE_REGION * side
    return (max(0, int(box[0] - m)), max(0, int(box[1] - m)), min(w, int(math.ceil(box[2] + m))),
            min(h, int(math.ceil(box[3] + m))))


def _merged_regions(regions: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Overlapping regions joined into their bounding rectangles, until none overlap."""
    out = list(regions)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def _distinct(dets: list[Detection]) -> list[Detection]:
    """Detections with the lower-scoring one of each overlapping pair (IoU > 0.5) left out."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: d.score, reverse=True):
        if all(_iou(d.box, o.box) <= 0.5 for o in kept):
            kept.append(d)
    return kept


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _run(kind: str, img: np.ndarray) -> list[tuple[float, float, float, float, float]]:
    """(left, top, right, bottom, score) in ``img`` pixels; CNN boxes mapped to HOG geometry."""
    model = _load_detector(kind)
    if kind == "hog":
        rects, scores, _ = model.run(img, 0, 0.0)
        # dlib rectangles are inclusive; edges are exclusive, hence +1.
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)) for r, s in zip(rects, scores)]
    return [(*cnn_box_to_hog((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1)),
             float(d.confidence)) for d in model(img, 0)]


def cnn_box_to_hog(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A CNN (MMOD) box moved and scaled by `CNN_TO_HOG` to where the HOG detector puts its box."""
    left, top, right, bottom = box
    cw = right - left
    cx = (left + right) / 2 + CNN_TO_HOG["dx"] * cw
    cy = (top + bottom) / 2 + CNN_TO_HOG["dy"] * cw
    half = CNN_TO_HOG["size"] * cw / 2
    return (cx - half, cy - half, cx + half, cy + half)
