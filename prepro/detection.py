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

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from prepro.errors import InputError
from prepro.settings import check, setting

DETECTORS = ("hog", "cnn", "hog+cnn")  # hog+cnn: the CNN only where HOG finds no face
CNN_MODEL_FILE = "mmod_human_face_detector.dat"
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


def find_model_file(name: str) -> Path:
    """A model file shipped in the face_recognition_models package (located without importing it:
    its import needs the removed ``pkg_resources``)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    dirs = [Path(d) for d in (spec.submodule_search_locations or [])] if spec is not None else []
    for d in dirs:
        if (d / "models" / name).is_file():
            return d / "models" / name
    where = "is not installed" if spec is None else f"has no models/{name}"
    raise InputError(f"the face_recognition_models package {where}: install it "
                     "(pip install face_recognition_models)")


@lru_cache(maxsize=2)
def _load_detector(kind: str) -> Any:
    import dlib

    if kind == "hog":
        return dlib.get_frontal_face_detector()
    return dlib.cnn_face_detection_model_v1(str(find_model_file(CNN_MODEL_FILE)))


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are searched for; the defaults find faces of 40 px and larger in small photos."""

    detector: str = setting("hog", "face detector: hog (fast), cnn (dlib's MMOD CNN: turned and small faces, "
                            "about 100x slower on a CPU) or hog+cnn (the CNN only where HOG finds none)", "str",
                            choices=DETECTORS)
    min_face: int = setting(40, "smallest face to look for, in pixels of the original image", "int", low=8,
                            high=100_000)
    min_face_frac: float = setting(0.06, "... or this fraction of the photo's longer side, whichever is larger "
                                   "(large photos are not searched for tiny faces)", "float", low=0, high=1)

    small_image_side: int = 128  # images no larger than this are face crops (padded and enlarged)

    def __post_init__(self) -> None:
        check(self)


def detection_scale(height: int, width: int, decode_scale: float, s: DetectorSettings) -> float:
    """The factor a photo of ``height`` x ``width`` decoded pixels (``decode_scale`` of the
    original) is resized by before detection."""
    smallest = max(s.min_face * decode_scale, s.min_face_frac * max(height, width), 1.0)
    k = min(WINDOW / smallest, MAX_UPSAMPLE)
    if height * width * k * k > MAX_DETECT_PIXELS:
        k = math.sqrt(MAX_DETECT_PIXELS / (height * width))
    return k


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
    pad = 0
    if max(h, w) <= settings.small_image_side:
        pad = round(CROP_PAD * max(h, w))
        img = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        k = CROP_SIDE / max(h, w)
    else:
        img = gray
        k = detection_scale(h, w, decode_scale, settings)
    if k != 1.0:
        ih, iw = img.shape
        size = (max(1, round(iw * k)), max(1, round(ih * k)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    sx = img.shape[1] / (w + 2 * pad)
    sy = img.shape[0] / (h + 2 * pad)
    raw = _run(kind, img)
    # Detector pixels back to the given image: undo the scale, then the border.
    dets = [Detection((l / sx - pad, t / sy - pad, r / sx - pad, b / sy - pad), score, kind)
            for l, t, r, b, score in raw]
    return sorted(dets, key=lambda d: d.area, reverse=True)


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
