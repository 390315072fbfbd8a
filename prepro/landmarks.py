"""Face boxes, dlib's 68 landmarks and a landmark quality score.

Conventions (the same everywhere in faceblocks):

* Landmarks are dlib's pixel indices in the ORIGINAL image: pixel (x, y) has its centre at the
  integers x, y. A reduced decode with scale ``s`` (decoded size / original size) maps original
  ``x`` to ``(x + 0.5) * s - 0.5``.
* A box is ``(left, top, right, bottom)`` in floats, in pixels of the ORIGINAL image, right and
  bottom exclusive (the whole image is ``(0, 0, width, height)``), always clamped to the image.
  Box edges scale exactly: a reduced-decode edge ``u`` is the original edge ``u / s``.

The 68 points follow the iBUG 300-W convention (0-based); the regions are the named slices below.
Nothing heavy is imported at module import: dlib and OpenCV load on first use.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

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

EYES_BLOCK_IDX = np.r_[17:27, 36:48]  # both eyebrows and both eyes
MOUTH_BLOCK_IDX = np.r_[48:68]  # outer and inner lip contours

BOX_METHODS = ("detector", "whole_image", "whole_image_fallback")
FACE_MODES = ("auto", "detect", "aligned")

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MEAN_SHAPE_FILE = Path(__file__).with_name("mean_shape.json")

# dlib's HOG detector scans an 80x80 window: upsample small images until their shorter side
# reaches this, so a pre-cropped 48x48 face (about 40 px) is seen at about 80 px.
MIN_DETECT_SIDE = 96
# Quality = shape term * image-evidence term, both in [0, 1] (see `landmark_quality`).
# Shape: exp(-(rms / QUALITY_RMS_SCALE)**2), rms = Procrustes residual to the mean face in
# inter-ocular units. On FER2013 detected faces rms is 0.06 / 0.11 / 0.20 (p5 / median / p95),
# so good faces get ~0.65-0.96 from it.
QUALITY_RMS_SCALE = 0.3
# Evidence: the regression-tree predictor returns a plausible mean-like face even on a blank or
# noise image, so the shape alone cannot flag junk. Faces have dark eyes, brows and lip line on
# lighter skin (nose bridge, cheeks, upper lip) at the predicted places; e = (skin - dark) mean
# grey / (grey std in the landmarks' box + 2), mapped by 1 - exp(-(max(e, 0) / QUALITY_EVIDENCE_SCALE)**2).
# FER2013 detected faces: e = 0.62 / 1.58 / 2.48 (p5 / median / p95); uniform noise: median 0.04,
# p95 0.75; blank: 0.
QUALITY_EVIDENCE_SCALE = 0.8
_SKIN_PAIRS = np.array([[28, 28], [29, 29], [30, 30], [2, 31], [14, 35], [3, 48], [13, 54], [33, 51]])
_DARK_POINTS = np.array([19, 24, 37, 38, 43, 44])


class PredictorNotFoundError(FileNotFoundError):
    """The 68-point shape predictor file could not be found."""


class NoFaceError(ValueError):
    """No face was found where one was required; the message is the failure reason."""


def find_predictor(path: str | Path | None = None) -> Path:
    """The shape predictor file: ``path`` if given (it must exist), else the copy shipped in the
    installed ``face_recognition_models`` package (located without importing it: its import
    needs ``pkg_resources``)."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise PredictorNotFoundError(
                f"shape predictor {str(p)!r} does not exist: pass an existing file with "
                f"--predictor PATH ({PREDICTOR_FILE}, shipped in the face_recognition_models package)")
        return p
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    dirs: list[Path] = []
    if spec is not None:
        dirs += [Path(d) for d in (spec.submodule_search_locations or [])]
        if spec.origin:
            dirs.append(Path(spec.origin).parent)
    for d in dirs:
        p = d / "models" / PREDICTOR_FILE
        if p.is_file():
            return p
    where = "is not installed" if spec is None else f"has no models/{PREDICTOR_FILE}"
    raise PredictorNotFoundError(
        f"no 68-point shape predictor: the face_recognition_models package {where}; install it "
        f"(pip install face_recognition_models) or pass --predictor PATH to {PREDICTOR_FILE}")


@dataclass
class FaceResult:
    box: tuple[float, float, float, float]  # (left, top, right, bottom), original image, clamped
    method: str  # one of BOX_METHODS
    det_score: float  # dlib detector score; NaN when the box is not from the detector
    landmarks: np.ndarray  # 68x2 float32, original-image pixel coordinates
    quality: float  # landmark plausibility in [0, 1]


@lru_cache(maxsize=1)
def load_mean_shape() -> np.ndarray:
    """The mean 68-point face (68x2 float64): centred, unit inter-ocular distance."""
    with open(MEAN_SHAPE_FILE, encoding="utf-8") as f:
        shape = np.asarray(json.load(f)["mean_shape"], dtype=np.float64)
    if shape.shape != (68, 2):
        raise ValueError(f"{MEAN_SHAPE_FILE} holds a {shape.shape} shape, expected (68, 2)")
    return shape


@lru_cache(maxsize=1)
def _mean_centred() -> tuple[np.ndarray, float]:
    m = load_mean_shape()
    m = m - m.mean(axis=0)
    return np.ascontiguousarray(m), float((m * m).sum())


def procrustes_rms(landmarks: np.ndarray) -> float:
    """RMS residual, in inter-ocular units, of the landmarks similarity-aligned (translation,
    rotation, uniform scale) to the mean face."""
    p = np.asarray(landmarks, dtype=np.float64)
    m, mm = _mean_centred()
    # In complex form z = x + iy the best rotation+scale is one factor a = <z, m> / <z, z>, and
    # the residual has the closed form |m|^2 - |<z, m>|^2 / |z|^2. m is centred, so <z, m> needs
    # no centring of p; |z|^2 does.
    g = p.T @ m
    n = len(p)
    mean = p.sum(axis=0) / n
    zz = float((p * p).sum()) - n * float(mean @ mean)
    if not zz > 1e-12:  # also catches NaN
        return math.inf
    re, im = float(g[0, 0] + g[1, 1]), float(g[0, 1] - g[1, 0])
    return math.sqrt(max(mm - (re * re + im * im) / zz, 0.0) / n)


def landmark_quality(landmarks: np.ndarray, gray: np.ndarray, scale: float = 1.0) -> float:
    """Plausibility in [0, 1] of 68 landmarks (original coordinates) on ``gray`` (a decode of the
    original at ``scale``): shape agreement with the mean face times image evidence of a face."""
    rms = procrustes_rms(landmarks)
    if not math.isfinite(rms):
        return 0.0
    shape_term = math.exp(-(rms / QUALITY_RMS_SCALE) ** 2)
    e = face_evidence(gray, landmarks, scale)
    return float(shape_term * (1.0 - math.exp(-(max(e, 0.0) / QUALITY_EVIDENCE_SCALE) ** 2)))


def _evidence_weights() -> tuple[np.ndarray, np.ndarray]:
    """Sample points as linear combinations of the 68 landmarks, and the +skin/-dark weights."""
    rows = []
    for i, j in _SKIN_PAIRS:  # skin: nose bridge, cheeks beside the nose and mouth, upper lip
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


def face_evidence(gray: np.ndarray, landmarks: np.ndarray, scale: float = 1.0) -> float:
    """(mean grey at skin points - mean grey at eyes, brows and lip line) / (grey std + 2) in the
    landmarks' box: ~1-2 on faces, ~0 on blank or noise images."""
    h, w = gray.shape
    p = np.asarray(landmarks, dtype=np.float64)
    off = 0.5 * scale - 0.5  # original x -> decoded (x + 0.5) * scale - 0.5
    pts = np.rint(_EVIDENCE_W @ p * scale + off).astype(np.intp)
    np.clip(pts[:, 0], 0, w - 1, out=pts[:, 0])
    np.clip(pts[:, 1], 0, h - 1, out=pts[:, 1])
    diff = float(gray[pts[:, 1], pts[:, 0]] @ _EVIDENCE_SIGN)
    lo, hi = p.min(axis=0) * scale + off, p.max(axis=0) * scale + off
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]) + 2, w), min(int(hi[1]) + 2, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    step = max(1, max(x1 - x0, y1 - y0) // 64)  # ~64x64 samples bound the cost on big photos
    box = gray[y0:y1:step, x0:x1:step]
    if step == 1:
        import cv2

        std = float(cv2.meanStdDev(box)[1][0, 0])  # ~10x faster than ndarray.std on small boxes
    else:
        std = float(box.std())
    return diff / (std + 2.0)


class FaceModel:
    """dlib's HOG face detector and 68-point shape predictor, loaded lazily on first use.

    Pickling keeps only the paths and parameters, so a model is cheap to send to worker
    processes; each process loads the dlib objects once.
    """

    def __init__(self, predictor_path: str | Path, face_mode: str = "auto", pre_cropped: bool = False,
                 detect_max_side: int = 640, small_image_side: int = 128) -> None:
        if face_mode not in FACE_MODES:
            raise ValueError(f"face_mode {face_mode!r} is not one of {', '.join(FACE_MODES)}")
        if detect_max_side < 1:
            raise ValueError(f"detect_max_side must be >= 1, got {detect_max_side}")
        self.predictor_path = str(predictor_path)
        self.face_mode = face_mode
        self.pre_cropped = bool(pre_cropped)
        self.detect_max_side = int(detect_max_side)
        self.small_image_side = int(small_image_side)
        self._detector: Any = None
        self._predictor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_detector"] = state["_predictor"] = None
        return state

    def __repr__(self) -> str:
        return (f"FaceModel({self.predictor_path!r}, face_mode={self.face_mode!r}, "
                f"pre_cropped={self.pre_cropped}, detect_max_side={self.detect_max_side})")

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            self._predictor = _load_predictor(str(find_predictor(self.predictor_path)))
        return self._predictor

    @property
    def detector(self) -> Any:
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    # -- public API -----------------------------------------------------------------------------

    def find(self, gray: np.ndarray, scale: float = 1.0) -> FaceResult:
        """The face of ``gray`` (a decode at ``scale`` of the original image), per ``face_mode``.
        Box and landmarks are in original-image coordinates."""
        gray = _check_gray(gray)
        if self.face_mode == "aligned":
            return self._whole(gray, scale, "whole_image")
        dets = self._detect(gray)
        if dets:
            return self._from_detection(gray, scale, dets[0])
        h, w = gray.shape
        if self.face_mode == "auto" and (self.pre_cropped or max(h, w) / scale <= self.small_image_side):
            return self._whole(gray, scale, "whole_image_fallback")
        raise NoFaceError(f"no face found by the detector (image {_orig_size_str(gray, scale)})")

    def find_all(self, gray: np.ndarray, scale: float = 1.0) -> list[FaceResult]:
        """Every face the detector finds, largest first (empty when none); in ``aligned`` mode the
        whole image as one face."""
        gray = _check_gray(gray)
        if self.face_mode == "aligned":
            return [self._whole(gray, scale, "whole_image")]
        return [self._from_detection(gray, scale, d) for d in self._detect(gray)]

    # -- internals ------------------------------------------------------------------------------

    def _whole(self, gray: np.ndarray, scale: float, method: str) -> FaceResult:
        import dlib

        h, w = gray.shape
        lm = self._landmarks(gray, dlib.rectangle(0, 0, w - 1, h - 1), scale)
        box = (0.0, 0.0, float(round(w / scale)), float(round(h / scale)))
        return FaceResult(box=box, method=method, det_score=math.nan, landmarks=lm,
                          quality=landmark_quality(lm, gray, scale))

    def _detect(self, gray: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """Detections as (left, top, right, bottom, score) box edges in ``gray`` pixels, largest
        first."""
        import cv2

        h, w = gray.shape
        if max(h, w) <= self.small_image_side:
            # A small image is a crop: its face fills it, so it needs only to reach the
            # detector's window (~80 px), by whole doublings as dlib's own upsampling would.
            s = 1.0
            while min(h, w) * s < MIN_DETECT_SIDE and s < 8:
                s *= 2
        else:
            # A photo: bring the longest side to detect_max_side, down (HOG cost grows with the
            # pixel count) or up (so a face of ~1/8 of the photo still reaches the window).
            s = self.detect_max_side / max(h, w)
        img = gray
        if s != 1.0:
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            img = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)
        sx, sy = img.shape[1] / w, img.shape[0] / h
        rects, scores, _ = self.detector.run(img, 0, 0.0)
        # dlib rectangles are inclusive; edges are exclusive, hence +1.
        dets = [(r.left() / sx, r.top() / sy, (r.right() + 1) / sx, (r.bottom() + 1) / sy, float(sc))
                for r, sc in zip(rects, scores)]
        dets.sort(key=lambda d: (d[2] - d[0]) * (d[3] - d[1]), reverse=True)
        return dets

    def _from_detection(self, gray: np.ndarray, scale: float,
                        det: tuple[float, float, float, float, float]) -> FaceResult:
        import dlib

        left, top, right, bottom, score = det
        # The predictor gets the unclamped box (as trained); the reported box is clamped.
        rect = dlib.rectangle(round(left), round(top), round(right) - 1, round(bottom) - 1)
        lm = self._landmarks(gray, rect, scale)
        h, w = gray.shape
        W, H = round(w / scale), round(h / scale)
        box = (min(max(left / scale, 0.0), W), min(max(top / scale, 0.0), H),
               min(max(right / scale, 0.0), W), min(max(bottom / scale, 0.0), H))
        return FaceResult(box=tuple(float(v) for v in box), method="detector", det_score=score,
                          landmarks=lm, quality=landmark_quality(lm, gray, scale))

    def _landmarks(self, gray: np.ndarray, rect: Any, scale: float) -> np.ndarray:
        shape = self.predictor(gray, rect)
        lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        if scale != 1.0:
            lm = (lm + 0.5) / np.float32(scale) - 0.5
        return lm


@lru_cache(maxsize=4)
def _load_predictor(path: str) -> Any:
    # ~100 MB and ~1 s to load: share one per process between models of different modes.
    import dlib

    return dlib.shape_predictor(path)


def _check_gray(gray: np.ndarray) -> np.ndarray:
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2:
        what = (f"{gray.dtype} array of shape {gray.shape}" if isinstance(gray, np.ndarray)
                else type(gray).__name__)
        raise ValueError(f"expected a 2-D uint8 grayscale image, got a {what}")
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        raise ValueError(f"image of {gray.shape[1]}x{gray.shape[0]} pixels is too small for landmarks")
    # dlib reads numpy memory in place only when it is C-contiguous; otherwise it would copy anyway.
    return gray if gray.flags.c_contiguous else np.ascontiguousarray(gray)


def _orig_size_str(gray: np.ndarray, scale: float) -> str:
    h, w = gray.shape
    return f"{round(w / scale)}x{round(h / scale)}"
