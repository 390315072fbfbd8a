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
  the ``aligned`` path (box method ``estimated_fallback``). With ``auto_trust`` such a crop is
  fitted the ``aligned`` way first and the detector runs only when that fit's quality is below it
  (a trusted fit is ``estimated``): the cheap path decides first.

A face box given with the input (a label file's box column) is used as it is (``given``).
Boxes and landmarks in results are in pixels of the ORIGINAL image (see `prepro.landmarks`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from prepro.blocks import BlockError, Blocks, cut_blocks_many
from prepro.cut_settings import FACE_MODES, LANDMARK_MODELS, NET_LANDMARKS, CutSettings
from prepro.detection import detect_faces, load_detectors
from prepro.errors import InputError, SampleError
from prepro.image_io import ImageDecodeError, decode_gray, gray_from_array
from prepro.landmark_models import load_landmark_models
from prepro.landmark_net import fits_from_net, load_landmark_net
from prepro.landmarks import Fit, fit_crops, fits_from_boxes
from prepro.model_files import LandmarkModelFile

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
class _Start:
    """Where one face's landmarks start: a box in the decoded image's pixels, or None for a crop
    (the start box is estimated), with how it was found."""

    method: str  # one of BOX_METHODS
    score: float  # the detector's confidence; NaN when the box is not a detector's
    box: tuple[float, float, float, float] | None
    provisional: bool = False  # auto_trust's crop fit: the detector runs should its quality be low


def _cut_errors() -> tuple[type, ...]:
    """What one odd image may raise on its way to blocks: its failure, never the run's end."""
    return (SampleError, ImageDecodeError, BlockError, OSError, _cv2_error())


@contextmanager
def _failure_of(out: ImageCut) -> Iterator[None]:
    """Turns an image's error (one of `_cut_errors`) into its failure reason."""
    try:
        yield
    except _cut_errors() as e:
        out.faces = []
        if isinstance(e, OSError):
            out.failure = f"unreadable file ({e.strerror or e})"
        elif isinstance(e, _cv2_error()):  # OpenCV refusing an odd image is that image's failure
            out.failure = f"OpenCV cannot process this image ({' '.join(str(e).split())[-120:]})"
        else:
            out.failure = str(e)


class FaceCutter:
    """Cuts faces into blocks with one set of settings; dlib's models load on first use, once per
    process. Pickling keeps only the settings (cheap to send to worker processes)."""

    def __init__(self, settings: CutSettings, landmark_model: LandmarkModelFile) -> None:
        if settings.face_mode not in FACE_MODES:  # a setting, not one image's problem
            raise InputError(f"face mode must be one of {', '.join(FACE_MODES)}, got {settings.face_mode!r}")
        if settings.landmarks not in LANDMARK_MODELS:
            raise InputError(f"landmarks must be one of {', '.join(LANDMARK_MODELS)}, got {settings.landmarks!r}")
        self.settings = settings
        self.landmark_model = landmark_model

    def load_models(self) -> None:
        """Load every model these settings use, now rather than at the first image: before worker
        processes are forked, so that they share one copy instead of loading their own."""
        if self.settings.landmarks in NET_LANDMARKS:
            load_landmark_net()
        if self.settings.landmarks not in NET_LANDMARKS or self.settings.second_look:
            self.landmark_model.load()
        load_landmark_models()
        if self.settings.face_mode != "aligned":
            load_detectors(self.settings.detector)

    def cut(self, image: str | os.PathLike | np.ndarray, all_faces: bool = False, keep_image: bool = False,
            box: tuple[float, float, float, float] | None = None) -> ImageCut:
        """The faces of ``image`` cut into blocks; only the largest unless ``all_faces``. ``image``
        is a file path or a uint8 array taken as the original image: HxW grey, or HxWx3 / HxWx4
        in OpenCV's BGR / BGRA order (`prepro.image_io.gray_from_array`). ``box``: a given face box."""
        return self.cut_many([image], [box], all_faces=all_faces, keep_image=keep_image)[0]

    def cut_many(self, images: list, boxes: list | None = None, all_faces: bool = False,
                 keep_image: bool = False) -> list[ImageCut]:
        """`cut` of each image (with ``boxes[i]`` its given box or None): the same results, with
        the landmark work (start boxes, quality) done for all the images' faces at once."""
        boxes = [None] * len(images) if boxes is None else boxes
        outs = [ImageCut() for _ in images]
        grays: list[np.ndarray | None] = [None] * len(images)
        starts: list[tuple[int, _Start]] = []  # (image index, where its landmarks start)
        for i, (image, box) in enumerate(zip(images, boxes)):
            with _failure_of(outs[i]):
                grays[i] = self._read(image, outs[i], keep_image)
                starts += [(i, st) for st in self._starts(grays[i], outs[i].scale, all_faces, box)]
        fits = self._fit_all(grays, starts, outs)
        self._detect_doubtful(grays, starts, fits, outs)
        self._cut_faces(grays, starts, fits, outs)
        return outs

    # -- steps ------------------------------------------------------------------------------------

    def _read(self, image: Any, out: ImageCut, keep_image: bool) -> np.ndarray:
        gray, out.scale, out.size = self._decode(image)
        if keep_image:
            out.gray = gray
        if min(gray.shape) < MIN_SIDE:
            raise SampleError(f"image of {out.size[1]}x{out.size[0]} pixels is too small to hold a face "
                              f"(at least {MIN_SIDE}x{MIN_SIDE})")
        return gray

    def _decode(self, image: Any) -> tuple[np.ndarray, float, tuple[int, int]]:
        if isinstance(image, np.ndarray):
            gray, scale = gray_from_array(image), 1.0
            size = gray.shape
        else:
            gray, scale, size = decode_gray(image, max_pixels=self.settings.max_pixels,
                                            work_max_side=self.settings.work_max_side)
        return np.ascontiguousarray(gray), scale, (int(size[0]), int(size[1]))

    def _starts(self, gray: np.ndarray, scale: float, all_faces: bool,
                box: tuple[float, float, float, float] | None) -> list["_Start"]:
        """Where the landmarks of each face of ``gray`` start (largest face first)."""
        s = self.settings
        if box is not None:
            if not all(math.isfinite(float(v)) for v in box):
                raise SampleError(f"face box {tuple(box)} is not finite")
            return [_Start("given", math.nan, tuple(float(v) * scale for v in box))]
        if s.face_mode == "aligned":
            return [_Start("estimated", math.nan, None)]
        if s.face_mode == "auto" and s.auto_trust is not None and not all_faces and self._is_crop(gray, scale):
            return [_Start("estimated", math.nan, None, provisional=True)]  # the detector only if doubtful
        dets = detect_faces(gray, s.detector, scale)
        if dets:
            return [_Start(d.detector, d.score, d.box) for d in (dets if all_faces else dets[:1])]
        h, w = gray.shape
        if s.face_mode == "auto" and self._is_crop(gray, scale):
            return [_Start("estimated_fallback", math.nan, None)]
        raise SampleError(f"no face found by the {s.detector.detector} detector (image "
                          f"{round(w / scale)}x{round(h / scale)})")

    def _is_crop(self, gray: np.ndarray, scale: float) -> bool:
        """Whether auto may take the image for a face crop: a pre-cropped dataset, or a small image."""
        return self.settings.pre_cropped or max(gray.shape) / scale <= self.settings.detector.small_image_side

    def _detect_doubtful(self, grays: list, starts: list[tuple[int, "_Start"]], fits: list,
                         outs: list[ImageCut]) -> None:
        """auto_trust: the crops whose own fit is below it get the detector, and the fit from its
        box when it finds a face; where it finds none the crop's fit stays (``estimated_fallback``)."""
        redo: list[tuple[int, _Start]] = []  # (position in starts, the detector's start)
        for k, ((i, st), fit) in enumerate(zip(starts, fits)):
            if not st.provisional or fit is None or fit.quality >= self.settings.auto_trust:
                continue
            with _failure_of(outs[i]):
                dets = detect_faces(grays[i], self.settings.detector, outs[i].scale)
                if dets:
                    redo.append((k, _Start(dets[0].detector, dets[0].score, dets[0].box)))
                else:
                    starts[k] = (i, _Start("estimated_fallback", math.nan, None))
        new_fits = self._fit_all(grays, [(starts[k][0], st) for k, st in redo], outs) if redo else []
        for (k, st), fit in zip(redo, new_fits):
            starts[k], fits[k] = (starts[k][0], st), fit

    def _fit_all(self, grays: list, starts: list[tuple[int, "_Start"]], outs: list[ImageCut]) -> list:
        """The fit (gray pixels) of every start: crops and boxes each in one batch. Should a batch
        fail, each start is fitted alone, so that only its own image gets the failure."""
        try:
            return self._fit_batch(grays, starts)
        except _cut_errors():
            fits: list = []
            for i, st in starts:
                fits.append(None)
                with _failure_of(outs[i]):
                    fits[-1] = self._fit_batch(grays, [(i, st)])[0]
            return fits

    def _fit_batch(self, grays: list, starts: list[tuple[int, "_Start"]]) -> list:
        if self.settings.landmarks in NET_LANDMARKS:
            return self._fit_batch_net(grays, starts)
        shape_model = self.landmark_model.load()
        crops = [k for k, (_, st) in enumerate(starts) if st.box is None]
        given = [k for k, (_, st) in enumerate(starts) if st.box is not None]
        fits: list = [None] * len(starts)
        for k, fit in zip(crops, fit_crops([grays[starts[k][0]] for k in crops], shape_model,
                                           self.settings.second_look)):
            fits[k] = fit
        for k, fit in zip(given, fits_from_boxes([grays[starts[k][0]] for k in given],
                                                 [starts[k][1].box for k in given], shape_model)):
            fits[k] = fit
        return fits

    def _fit_batch_net(self, grays: list, starts: list[tuple[int, "_Start"]]) -> list:
        """The network's fits: every start of the batch (crops and boxes alike) in one pass; with the
        second look, dlib's predictor fits the doubtful ones again."""
        return fits_from_net([grays[i] for i, _ in starts], [st.box for _, st in starts], load_landmark_net(),
                             self.settings.landmarks == "net",
                             self.landmark_model.load() if self.settings.second_look else None)

    def _cut_faces(self, grays: list, starts: list[tuple[int, "_Start"]], fits: list, outs: list[ImageCut]) -> None:
        """Each fit's face and blocks into its image's cut, in the order of ``starts``; the blocks of
        all faces cut together. A face whose blocks cannot be cut fails its whole image."""
        faces: list[tuple[int, Face]] = []  # (image index, face)
        for (i, st), fit in zip(starts, fits):
            if fit is not None and outs[i].failure is None:
                with _failure_of(outs[i]):
                    faces.append((i, self._face(fit, st.method, st.score, grays[i].shape, outs[i].scale)))
        blocks = cut_blocks_many([grays[i] for i, _ in faces], np.array([f.landmarks for _, f in faces]),
                                 self.settings.blocks, [outs[i].scale for i, _ in faces])
        for (i, face), blk in zip(faces, blocks):
            if outs[i].failure is None:
                with _failure_of(outs[i]):
                    if isinstance(blk, BlockError):
                        raise blk
                    outs[i].faces.append(FaceCut(face, blk))

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
