"""From an image to face blocks: the one path that preprocess, preview and predict share.

``FaceCutter.cut(image)`` decodes the image (a file, or an array such as a CSV row or a video
frame), finds the face(s), fits the 68 landmarks and cuts the blocks; the result is an
`ImageCut` with one `FaceCut` per face (largest first), or the reason why there is none. Nothing
raises for a bad image: every image gets its faces or its reason, whatever its size or content.

How the face box is found (``face_mode``):

* ``aligned``: the image is a face crop: no detector runs; the landmarks start from the box the
  detector would most likely have given (box method ``estimated``);
* ``detect``: the detector (``detector``: hog, cnn, or hog+cnn for CNN where HOG finds nothing);
  no face found is a failure;
* ``auto``: the detector, and for a small image or a pre-cropped dataset where it finds nothing,
  the ``aligned`` path (box method ``estimated_fallback``).

A face box given with the input (a label file's box column) is used as it is (``given``).
Boxes and landmarks in results are in pixels of the ORIGINAL image (see `prepro.landmarks`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prepro.blocks import BlockConfig, Blocks
from prepro.detection import DetectorSettings
from prepro.errors import InputError, SampleError
from prepro.landmarks import Fit, LandmarkModelFile

FACE_MODES = ("auto", "detect", "aligned")
# How a face box was found; the position is the index stored in shards (only append).
BOX_METHODS = ("hog", "cnn", "estimated", "estimated_fallback", "given")
MIN_SIDE = 8  # pixels: a smaller image cannot hold a face worth cutting


def _cv2_error() -> type:
    import cv2

    return cv2.error


@dataclass
class Face:
    """One face found in an image; coordinates in ORIGINAL-image pixels."""

    box: tuple[float, float, float, float]  # left, top, right, bottom, clamped to the image
    method: str  # one of BOX_METHODS
    det_score: float  # detector confidence; NaN when the box is not a detector's
    landmarks: np.ndarray  # 68x2 float32
    quality: float  # probability in [0, 1] that the landmarks are right (see prepro.landmark_models)


@dataclass
class FaceCut:
    face: Face
    blocks: Blocks


@dataclass
class ImageCut:
    """What one image gave: its faces cut into blocks (largest first), or why none."""

    faces: list[FaceCut] = field(default_factory=list)
    failure: str | None = None  # the reason there is no face, for the failure list
    size: tuple[int, int] | None = None  # original height, width (None when it could not be read)
    gray: np.ndarray | None = None  # the decoded image, when asked to keep it
    scale: float = 1.0  # gray's size / the original's


@dataclass(frozen=True)
class CutSettings:
    """Everything that decides how an image becomes blocks."""

    face_mode: str = "auto"
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    blocks: BlockConfig = field(default_factory=BlockConfig)
    max_pixels: int = 40_000_000  # images whose header claims more are refused undecoded
    work_max_side: int = 1024  # large JPEGs are decoded reduced, never below this longest side
    pre_cropped: bool = False  # the dataset's images are face crops (auto falls back to the crop)
    second_look: bool = False  # fit a doubtful crop again from other starts (see prepro.landmarks)


class FaceCutter:
    """Cuts faces into blocks with one set of settings; dlib's models load on first use, once per
    process. Pickling keeps only the settings (cheap to send to worker processes)."""

    def __init__(self, settings: CutSettings, landmark_model: LandmarkModelFile) -> None:
        if settings.face_mode not in FACE_MODES:  # a setting, not one image's problem
            raise InputError(f"face mode must be one of {', '.join(FACE_MODES)}, got {settings.face_mode!r}")
        self.settings = settings
        self.landmark_model = landmark_model

    def cut(self, image: str | os.PathLike | np.ndarray, all_faces: bool = False, keep_image: bool = False,
            box: tuple[float, float, float, float] | None = None) -> ImageCut:
        """The faces of ``image`` cut into blocks; only the largest unless ``all_faces``. ``image``
        is a file path or a uint8 array taken as the original image: HxW grey, or HxWx3 / HxWx4
        in OpenCV's BGR / BGRA order (`prepro.image_io.gray_from_array`). ``box``: a given face box."""
        from prepro.blocks import BlockError, cut_blocks
        from prepro.image_io import ImageDecodeError

        out = ImageCut()
        try:
            gray, out.scale, out.size = self._decode(image)
            if keep_image:
                out.gray = gray
            if min(gray.shape) < MIN_SIDE:
                raise SampleError(f"image of {out.size[1]}x{out.size[0]} pixels is too small to hold a face "
                                  f"(at least {MIN_SIDE}x{MIN_SIDE})")
            fits = self._fits(gray, out.scale, all_faces, box)
            for fit, method, score in fits:
                face = self._face(fit, method, score, gray.shape, out.scale)
                out.faces.append(FaceCut(face, cut_blocks(gray, face.landmarks, self.settings.blocks, out.scale)))
        except (SampleError, ImageDecodeError, BlockError) as e:
            out.faces, out.failure = [], str(e)
        except OSError as e:
            out.faces, out.failure = [], f"unreadable file ({e.strerror or e})"
        except _cv2_error() as e:  # OpenCV refusing an odd image is that image's failure, not the run's
            out.faces, out.failure = [], f"OpenCV cannot process this image ({' '.join(str(e).split())[-120:]})"
        return out

    # -- steps ------------------------------------------------------------------------------------

    def _decode(self, image: Any) -> tuple[np.ndarray, float, tuple[int, int]]:
        from prepro.image_io import decode_gray, gray_from_array

        if isinstance(image, np.ndarray):
            gray, scale = gray_from_array(image), 1.0
            size = gray.shape
        else:
            gray, scale, size = decode_gray(image, max_pixels=self.settings.max_pixels,
                                            work_max_side=self.settings.work_max_side)
        return np.ascontiguousarray(gray), scale, (int(size[0]), int(size[1]))

    def _fits(self, gray: np.ndarray, scale: float, all_faces: bool,
              box: tuple[float, float, float, float] | None) -> list[tuple[Fit, str, float]]:
        """(fit in gray pixels, box method, detector score) per face, largest first."""
        from prepro.detection import detect_faces
        from prepro.landmarks import fit_crop, fit_from_box

        shape_model = self.landmark_model.load()
        s = self.settings
        if box is not None:
            return [(fit_from_box(gray, tuple(v * scale for v in box), shape_model), "given", math.nan)]
        if s.face_mode == "aligned":
            return [(fit_crop(gray, shape_model, s.second_look), "estimated", math.nan)]
        dets = detect_faces(gray, s.detector, scale)
        if dets:
            chosen = dets if all_faces else dets[:1]
            return [(fit_from_box(gray, d.box, shape_model), d.detector, d.score) for d in chosen]
        h, w = gray.shape
        if s.face_mode == "auto" and (s.pre_cropped or max(h, w) / scale <= s.detector.small_image_side):
            return [(fit_crop(gray, shape_model, s.second_look), "estimated_fallback", math.nan)]
        raise SampleError(f"no face found by the {s.detector.detector} detector (image "
                          f"{round(w / scale)}x{round(h / scale)})")

    @staticmethod
    def _face(fit: Fit, method: str, score: float, shape: tuple[int, int], scale: float) -> Face:
        """Gray-pixel fit -> a Face in original pixels (box edges scale exactly; pixel centres
        map as (x + 0.5) / scale - 0.5)."""
        h, w = shape
        big_w, big_h = round(w / scale), round(h / scale)
        l, t, r, b = (v / scale for v in fit.box)
        box = (min(max(l, 0.0), big_w), min(max(t, 0.0), big_h), min(max(r, 0.0), big_w), min(max(b, 0.0), big_h))
        marks = fit.landmarks if scale == 1.0 else (fit.landmarks + 0.5) / scale - 0.5
        return Face(box=tuple(float(v) for v in box), method=method, det_score=float(score),
                    landmarks=marks.astype(np.float32), quality=float(fit.quality))
