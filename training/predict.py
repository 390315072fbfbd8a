"""Predictions on new images and videos, cut exactly as a model's training shards were.

``predict(model, inputs, PredictOptions())`` yields one `ImagePrediction` per image (or sampled
video frame), in input order: every face found (largest first) with its box, label, class
probabilities and per-region attention weights, or the reason there is none. Faces are found in
parallel (``jobs`` processes, the `prepro.faces.FaceCutter` every command shares) and classified
in batches of ``batch_size`` faces across images and frames.

    from training.predict import Classifier, PredictOptions, predict
    for result in predict("fer2013", ["photo.jpg"]):           # a shipped model, by name
        print(result.path, [(f.label, f.box) for f in result.faces])
"""

from __future__ import annotations

import csv
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from prepro.errors import InputError, OutputError
from prepro.inputs import is_inside, is_video_file, printable
from prepro.settings import check, setting


@dataclass
class PredictOptions:
    """How `predict` runs; every value is checked when the options are made (InputError)."""

    overrides: dict[str, Any] = setting({}, "face, detector, min_face, min_face_frac to use instead of the "
                                        "model's", "dict")
    jobs: int = setting(1, "processes finding faces; -1 = all cores", "int", low=-1, high=4096)
    batch_size: int = setting(64, "faces per forward pass", "int", low=1, high=4096)
    every: int = setting(1, "videos: every Nth frame", "int", low=1, high=1_000_000)
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...", "str")
    landmark_model: str | None = setting(None, "dlib 68-point model file; none = the shipped one", "str",
                                         optional=True)
    annotate: str | None = setting(None, "a folder for annotated images, or an .mp4 file for one annotated "
                                   "video", "str", optional=True)
    # Faces whose landmark quality is below this get no label: a fit this doubtful is almost surely
    # not on a face (the photo of dogs in ../shared/data/photos, cut with --face aligned, scores
    # 0.002; the hostile-input report saw 0.05 on another face-less photo); 0 labels every fit.
    min_quality: float = setting(0.1, "no label below this landmark quality", "float", low=0, high=1)
    tta_flip: bool | None = setting(None, "average each face with its mirror image; none = as the model's card "
                                    "says", "bool", optional=True)
    csv: str | None = setting(None, "also write every face as a CSV row to this file (replaced when done), "
                              "into this pipe or device, or to standard output for -", "str", optional=True)
    progress: bool = setting(False, "show a progress bar", "bool")

    def __post_init__(self) -> None:
        for name in ("landmark_model", "annotate", "csv"):  # a pathlib.Path is a path too
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        check(self)
        if self.jobs == 0:
            raise InputError("jobs must be -1 (all cores) or a positive number, got 0")


@dataclass
class FacePrediction:
    box: list[float]  # left, top, right, bottom in original-image pixels
    box_method: str  # how the box was found (hog, cnn, estimated, estimated_fallback)
    quality: float  # landmark quality in [0, 1]
    label: str  # the most probable class
    probabilities: dict[str, float]  # class -> probability
    region_weights: dict[str, float]  # region -> attention weight
    landmarks: list[list[float]] = field(default_factory=list)  # the 68 points [x, y], original-image pixels


@dataclass
class ImagePrediction:
    path: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None  # why the image gave no prediction (unreadable, no face)
    frame: int | None = None  # video frame index
    time: float | None = None  # video time in seconds
    annotated: str | None = None  # the annotated copy, when asked for

    def to_dict(self) -> dict[str, Any]:
        return {"path": printable(self.path), "frame": self.frame, "time": self.time, "error": self.error,
                "annotated": self.annotated, "faces": [f.__dict__ for f in self.faces]}


class Classifier:
    """A checkpoint ready to classify blocks: the network and what it was trained on."""

    def __init__(self, model: str | os.PathLike, device: str = "auto", tta_flip: bool | None = None):
        from prepro.blocks import BlockConfig
        from training.checkpoint import build_model_from_checkpoint
        from training.model_names import resolve_checkpoint
        from training.errors import CheckpointError
        from training.evaluate import model_tta_flip, resolve_device

        self.path, self.ckpt = resolve_checkpoint(model)
        self.preprocessing = self.ckpt.get("preprocessing") or {}
        if "blocks" not in self.preprocessing:
            raise CheckpointError(f"{self.path} does not record the block preprocessing it was trained with "
                                  "(trained on shards not made by `faceblocks preprocess`?)")
        self.blocks = BlockConfig.from_dict(self.preprocessing["blocks"])
        for region, size in self.ckpt["block_sizes"].items():
            if list(getattr(self.blocks, f"{region}_size")) != list(size):
                raise CheckpointError(f"{self.path}: the block sizes of its preprocessing and its model differ")
        self.device = resolve_device(device)
        self.model = build_model_from_checkpoint(self.ckpt).to(self.device)
        self.class_names = list(self.ckpt["class_names"])
        self.regions = list(self.ckpt["regions"])
        self.tta_flip = model_tta_flip(self.ckpt) if tta_flip is None else tta_flip

    @classmethod
    def load(cls, model: str | os.PathLike, device: str = "auto", tta_flip: bool | None = None) -> "Classifier":
        """A run folder, a .pt file, or a shipped model's name (`faceblocks models`)."""
        return cls(model, device, tta_flip)

    def cut_settings(self, overrides: dict[str, Any] | None = None):
        """How to find faces and cut blocks: as the training shards were, with ``overrides``."""
        from prepro.config import PreprocessConfig
        from prepro.settings import from_mapping, to_dict
        from training.checkpoint import stored_cut_config

        stored = to_dict(stored_cut_config(self.preprocessing))
        flat = {**{k: v for k, v in stored.items() if k not in ("detection", "blocks")},
                **stored["detection"], **stored["blocks"], **(overrides or {})}
        return from_mapping(PreprocessConfig, flat).cut_settings()

    def classify(self, blocks: list) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, region weights) for a list of `prepro.blocks.Blocks`, one forward pass."""
        import torch

        from training.checkpoint import require_finite_outputs
        from training.data import flip_batch, normalize

        batch = {r: torch.from_numpy(np.stack([getattr(b, r) for b in blocks])).unsqueeze(1)
                 .to(self.device).float().div_(255.0) for r in self.regions}
        x = normalize(batch, self.regions)
        with torch.no_grad():
            out = self.model(x)
            probs, weights = out.logits.float().softmax(dim=1), out.region_weights.float()
            if self.tta_flip:  # the same averaging as `evaluate --tta-flip`
                mirror = self.model(flip_batch(x, self.regions))
                probs = (probs + mirror.logits.float().softmax(dim=1)) / 2
                weights = (weights + mirror.region_weights.float()) / 2
        probs, weights = probs.cpu().numpy(), weights.cpu().numpy()
        require_finite_outputs(self.path, probs, weights)
        return probs, weights


# ---------------------------------------------------------------------------------------------
# Sources: images and video frames, as (path, frame, time, image) where image is a path or an array


# One input: a path (an image, a video, a folder or a glob pattern) or an image array.
_INPUT_TYPES = ("inputs must be image or video paths (str or os.PathLike), folders, glob patterns or numpy "
                "image arrays (HxW grey, HxWx3 BGR, HxWx4 BGRA), or a list of them")


def input_list(inputs: Any) -> list[str | np.ndarray]:
    """``inputs`` as a list: a single path or a single array is one input (a string is never
    iterated); anything else than a list of paths and arrays is an InputError."""
    from collections.abc import Iterable, Mapping

    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    elif isinstance(inputs, (bytes, bytearray, Mapping)) or not isinstance(inputs, Iterable):
        raise InputError(f"{_INPUT_TYPES}; got {type(inputs).__name__}")
    items = [x if isinstance(x, np.ndarray) else os.fspath(x) if isinstance(x, os.PathLike) else x
             for x in inputs]
    for k, x in enumerate(items):
        if not isinstance(x, (str, np.ndarray)):
            raise InputError(f"{_INPUT_TYPES}; inputs[{k}] is {type(x).__name__}")
    return items


def listed_inputs(items: list[str | np.ndarray]) -> list[tuple[str, str | None, np.ndarray | None]]:
    """(name, reason, array) for every image: the files the paths name (`image_inputs`: reason
    None when usable) and each array as it is, named ``<array K>`` by its place among the inputs."""
    from prepro.inputs import image_inputs

    out: list[tuple[str, str | None, np.ndarray | None]] = []
    for k, x in enumerate(items):
        if isinstance(x, np.ndarray):
            out.append((f"<array {k}>", None, x))
        else:
            out += [(path, reason, None) for path, reason in image_inputs([x])]
    return out


def _sources(listed: list[tuple[str, str | None, np.ndarray | None]], every: int
             ) -> Iterator[tuple[str, int | None, float | None, Any]]:
    """(path, frame, time, image) for every input: an image path or array, a video frame, or the
    reason the input gives nothing (as an InputError in place of the image)."""
    for path, reason, array in listed:
        if array is not None:
            yield path, None, None, array
        elif reason is not None:
            yield path, None, None, InputError(reason)
        elif is_video_file(path):
            yield from _video_frames(path, every)
        else:
            yield path, None, None, path


def _video_frames(path: str, every: int) -> Iterator[tuple[str, int | None, float | None, Any]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        yield path, None, None, InputError(f"OpenCV cannot read {printable(path)} as a video")
        return
    fps = video_fps(cap)
    k = decoded = 0
    try:
        while cap.grab():
            if k % every == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    decoded += 1
                    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                    yield path, k, k / fps, np.ascontiguousarray(gray)
            k += 1
    finally:
        cap.release()
    if not decoded:  # a video that opens but gives nothing must still be accounted for
        yield path, None, None, InputError(f"no decodable frame in {k} frame(s) of the video")


def video_fps(cap) -> float:
    """The frame rate OpenCV reports for an open capture; 25 when it reports nothing usable."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and 0 < fps < 1000 else 25.0


def _cut_chunk(cutter, chunk: list, keep: bool) -> list:
    """Worker task: cut every face of each (path, frame, time, image) of ``chunk``."""
    out = []
    for path, frame, t, image in chunk:
        if isinstance(image, Exception):
            out.append((path, frame, t, None, str(image)))
        else:
            out.append((path, frame, t, cutter.cut(image, all_faces=True, keep_image=keep), None))
    return out


def _chunked(it: Iterator, n: int) -> Iterator[list]:
    chunk: list = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict(model: str | os.PathLike, inputs: str | os.PathLike | np.ndarray | Iterable[str | os.PathLike | np.ndarray],
            opts: PredictOptions = PredictOptions()) -> Iterator[ImagePrediction]:
    """Classify every face of every input image or sampled video frame, in input order.

    ``inputs`` is one input or a list of them: a path to an image or a video, a folder, a glob
    pattern, or an image as a numpy uint8 array: HxW grey, or HxWx3 / HxWx4 in OpenCV's BGR /
    BGRA channel order (what ``cv2.imread`` and ``cv2.VideoCapture`` give; convert an RGB array
    with ``rgb[..., ::-1]``). An array's predictions are named ``<array K>``, K its place."""
    from joblib import delayed
    from tqdm import tqdm

    from prepro.distributor import run_in_order
    from prepro.faces import FaceCutter
    from prepro.landmarks import LandmarkModelFile

    inputs = input_list(inputs)
    classifier = Classifier(model, opts.device, opts.tta_flip)  # a wrong model is the first thing said
    listed = listed_inputs(inputs)
    if not listed:
        raise InputError("no image or video files among the inputs" if inputs else "no inputs given")
    check_outputs_apart(inputs, listed, opts)
    landmark = LandmarkModelFile.find(opts.landmark_model)
    landmark.load()  # a file that is no landmark model is one clear error before any work
    cutter = FaceCutter(classifier.cut_settings(opts.overrides), landmark)
    tasks = (delayed(_cut_chunk)(cutter, chunk, opts.annotate is not None)
             for chunk in _chunked(_sources(listed, opts.every), 8))
    cuts = (c for chunk in run_in_order(tasks, _jobs_for(listed, opts.jobs)) for c in chunk)
    with (_Annotator(opts.annotate, opts.every) as annotator, prediction_csv(opts.csv, classifier.class_names, classifier.regions) as table,
          tqdm(unit="img", disable=not opts.progress) as bar):
        for batch in _face_batches(cuts, opts.batch_size):
            for pred, cut in _classify(classifier, batch, opts.min_quality):
                if annotator.active and cut is not None and cut.gray is not None:
                    pred.annotated = annotator.add(pred, cut)
                table(pred)
                bar.update(1)
                yield pred


def _jobs_for(listed: list[tuple[str, str | None, np.ndarray | None]], jobs: int) -> int:
    """No more worker processes than chunks of work: each one loads the landmark model (about a
    second), so one photo is found in this process's time, not that of idle workers starting."""
    from prepro.distributor import worker_count

    if any(reason is None and array is None and is_video_file(p) for p, reason, array in listed):
        return jobs  # a video's frames are many chunks
    return min(worker_count(jobs), max(1, math.ceil(len(listed) / 8)))


def _face_batches(cuts: Iterator, batch_size: int) -> Iterator[list]:
    """Groups of consecutive cuts holding about ``batch_size`` faces together."""
    batch, faces = [], 0
    for c in cuts:
        batch.append(c)
        faces += len(c[3].faces) if c[3] is not None else 0
        if faces >= batch_size:
            yield batch
            batch, faces = [], 0
    if batch:
        yield batch


def _gate(cut, min_quality: float):
    """``cut`` with only the faces whose landmark quality is at least ``min_quality``; a cut left
    with none becomes a failure that says so (a label on misplaced blocks would be a guess)."""
    from dataclasses import replace

    if cut is None or cut.failure or min_quality <= 0:
        return cut
    kept = [fc for fc in cut.faces if fc.face.quality >= min_quality]
    if kept:
        return replace(cut, faces=kept)
    best = max(fc.face.quality for fc in cut.faces)
    return replace(cut, faces=[], failure=f"no face with landmark quality at least {min_quality:g} "
                                           f"({len(cut.faces)} doubtful, best {best:.2f})")


def _classify(classifier: Classifier, batch: list, min_quality: float = 0.0) -> list[tuple[ImagePrediction, Any]]:
    batch = [(path, frame, t, _gate(cut, min_quality), err) for path, frame, t, cut, err in batch]
    blocks = [fc.blocks for _p, _f, _t, cut, _e in batch if cut is not None for fc in cut.faces]
    probs, weights = classifier.classify(blocks) if blocks else (np.zeros((0, 0)), np.zeros((0, 0)))
    out, k = [], 0
    for path, frame, t, cut, err in batch:
        pred = ImagePrediction(path=path, frame=frame, time=None if t is None else round(t, 3))
        if cut is None or cut.failure:
            pred.error = err or (cut.failure if cut is not None else "unreadable")
            out.append((pred, cut))
            continue
        for fc in cut.faces:
            p, w = probs[k], weights[k]
            k += 1
            pred.faces.append(FacePrediction(
                box=[round(float(v), 1) for v in fc.face.box], box_method=fc.face.method,
                quality=round(float(fc.face.quality), 4), label=classifier.class_names[int(p.argmax())],
                probabilities={c: round(float(x), 4) for c, x in zip(classifier.class_names, p)},
                region_weights={r: round(float(x), 4) for r, x in zip(classifier.regions, w)},
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in fc.face.landmarks]))
        out.append((pred, cut))
    return out


def check_outputs_apart(inputs: list[str | np.ndarray], listed: list[tuple[str, str | None, np.ndarray | None]],
                        opts: PredictOptions) -> None:
    """Refuse an output file that is one of the inputs (it would be replaced while it is read), or
    an annotation folder inside an input folder (its pictures would become inputs next time)."""
    for flag, target in (("--csv", opts.csv), ("--annotate", opts.annotate)):
        if target is not None and any(_same_file(target, p) for p, reason, array in listed
                                      if reason is None and array is None):
            raise OutputError(f"{flag} {printable(target)} is one of the inputs: choose another file")
    if opts.annotate is None or is_video_file(opts.annotate):
        return
    for folder in (i for i in inputs if isinstance(i, str) and os.path.isdir(i)):
        if is_inside(opts.annotate, folder):
            raise OutputError(f"--annotate {printable(opts.annotate)} is inside an input folder: its pictures "
                              "would be read as inputs next time; choose a folder outside the inputs")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Annotation and CSV


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def annotated_name(path: str, index: int) -> str:
    """A file name for the annotated copy that cannot leave its folder."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._") or "image"
    return f"{index:05d}_{stem[:80]}.png"


def draw(picture: np.ndarray, scale: float, pred: ImagePrediction, cut) -> np.ndarray:
    """A BGR copy of ``picture`` (the decoded image: BGR colour, or grey) with each face's box,
    landmarks, block outlines and label; labels are placed by `label_places`."""
    import cv2

    img = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 else picture.copy()
    thick = _line_width(img.shape)
    for fc in cut.faces:
        l, t, r, b = (v * scale for v in fc.face.box)
        cv2.rectangle(img, (int(l), int(t)), (int(r), int(b)), (0, 255, 255), thick)
        for x, y in (fc.face.landmarks + 0.5) * scale - 0.5:
            cv2.circle(img, (int(round(x)), int(round(y))), thick, (0, 255, 0), -1)
        for name, colour in (("eyes", (255, 128, 0)), ("mouth", (0, 0, 255))):
            cv2.polylines(img, [np.round(_block_corners(fc, name, scale)).astype(np.int32)], True, colour, thick)
    for fp, (x0, y0, x1, y1) in zip(pred.faces, label_places(img.shape, scale, pred, cut)):
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), -1)  # dark ground: readable on any photo
        cv2.putText(img, _label_text(fp), (x0 + _PAD, y1 - _PAD - _baseline(thick)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    return img


_PAD = 2  # pixels between a label's text and its ground


def _line_width(shape: tuple[int, ...]) -> int:
    return max(1, round(max(shape[:2]) / 400))


def _label_text(fp: FacePrediction) -> str:
    return f"{fp.label} {fp.probabilities[fp.label]:.2f}"


def _baseline(thick: int) -> int:
    import cv2

    return cv2.getTextSize("g", cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)[1]


def _block_corners(fc, name: str, scale: float) -> np.ndarray:
    """The four corners of a face's ``name`` block in drawn pixels."""
    m = np.vstack([getattr(fc.blocks, f"{name}_affine"), [0, 0, 1]])
    h, w = getattr(fc.blocks, name).shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64).T
    return ((np.linalg.inv(m) @ corners)[:2].T + 0.5) * scale - 0.5


def block_rects(fc, scale: float) -> list[tuple[int, int, int, int]]:
    """The bounding rectangles (x0, y0, x1, y1; x1, y1 exclusive) of a face's blocks, outline
    included, in drawn pixels."""
    rects = []
    for name in ("eyes", "mouth"):
        pts = _block_corners(fc, name, scale)
        x0, y0 = np.floor(pts.min(0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        rects.append((int(x0), int(y0), int(x1), int(y1)))
    return rects


def label_places(shape: tuple[int, ...], scale: float, pred: ImagePrediction, cut) -> list[tuple[int, int, int, int]]:
    """Where each face's label goes (x0, y0, x1, y1), largest face first: the first of above, below,
    right of, left of or inside the top of its box (then higher above it) that lies in the picture
    and covers no block of any face and no label placed before; failing all, the least covered."""
    import cv2

    thick = _line_width(shape)
    height, width = shape[:2]
    taken = [r for fc in cut.faces for r in block_rects(fc, scale)]
    places = []
    for fc, fp in zip(cut.faces, pred.faces):
        (tw, th), base = cv2.getTextSize(_label_text(fp), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
        w, h = tw + 2 * _PAD, th + base + 2 * _PAD
        l, t, r, b = (int(round(v * scale)) for v in fc.face.box)
        corners = [(l, t - h - 1), (l, b + 1), (r + 1, t), (l - w - 1, t), (l + 1, t + 1)]
        corners += [(l, t - k * (h + 1)) for k in range(2, 6)]
        rects = [(x, y, x + w, y + h) for x, y in corners]
        inside = [q for q in rects if q[0] >= 0 and q[1] >= 0 and q[2] <= width and q[3] <= height]
        free = [q for q in inside if not any(_covers(q, o) for o in taken)]
        best = free[0] if free else min(inside or rects, key=lambda q: sum(_covers(q, o) for o in taken))
        best = _pulled_in(best, width, height)
        places.append(best)
        taken.append(best)
    return places


def _pulled_in(rect: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """``rect`` moved the least that brings it into a ``width`` x ``height`` picture."""
    dx = max(0, -rect[0]) or min(0, width - rect[2])
    dy = max(0, -rect[1]) or min(0, height - rect[3])
    return rect[0] + dx, rect[1] + dy, rect[2] + dx, rect[3] + dy


def _covers(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The area two rectangles share (0 when apart)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def colour_picture(pred: ImagePrediction, cut) -> np.ndarray:
    """What to draw on: an image file that holds colour, decoded again in colour (BGR, upright, at
    the size the faces were found on); otherwise the grey image that was classified (a grey
    photo, a video frame, or a file that no longer decodes as it did a moment ago)."""
    import cv2
    from PIL import Image, ImageOps

    from prepro.image_io import DECODED_FORMATS

    if pred.frame is not None or not isinstance(pred.path, str) or not os.path.isfile(pred.path):
        return cut.gray
    try:
        with Image.open(pred.path, formats=DECODED_FORMATS) as im:
            if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "PA"):
                return cut.gray  # a grey picture: its grey is the whole of it
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError):
        return cut.gray
    if cut.size is not None and rgb.shape[:2] != tuple(cut.size):
        return cut.gray  # the file changed since its faces were found
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = cut.gray.shape[:2]
    return bgr if bgr.shape[:2] == (h, w) else cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)


ANNOTATION_SOFTWARE = "faceblocks predict"  # the PNG text tag that proves an annotated copy is faceblocks'


def _tagged_png(bgr: np.ndarray) -> bytes:
    """``bgr`` as PNG bytes carrying the `ANNOTATION_SOFTWARE` tag."""
    from io import BytesIO

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", ANNOTATION_SOFTWARE)
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def is_own_annotation(path: Path) -> bool:
    """True when ``path`` is a plain file that `predict --annotate` wrote (a PNG with its tag)."""
    from PIL import Image, UnidentifiedImageError

    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == ANNOTATION_SOFTWARE
    except (OSError, UnidentifiedImageError, ValueError):
        return False


class _Annotator:
    """Writes annotated images into a folder, or the annotated frames of a video into one video
    file at the rate that keeps the source's timing (its frame rate divided by ``every``). The video
    is written under a temporary name and renamed when complete."""

    def __init__(self, target: str | None, every: int = 1):
        self.target = Path(target) if target else None
        self.video = self.target is not None and is_video_file(self.target.name)
        self.every = every
        self.writer: Any = None
        self.tmp: Path | None = None
        self.count = 0

    @property
    def active(self) -> bool:
        return self.target is not None

    def __enter__(self) -> "_Annotator":
        if self.target is not None and not self.video:
            try:
                self.target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create {self.target} ({e.strerror or e})") from None
        return self

    def add(self, pred: ImagePrediction, cut) -> str:
        import cv2

        from prepro.outputs import atomic_write

        img = draw(colour_picture(pred, cut), cut.scale, pred, cut)
        self.count += 1
        if not self.video:
            path = self.target / annotated_name(pred.path, self.count - 1)
            if (path.exists() or path.is_symlink()) and not is_own_annotation(path):
                raise OutputError(f"--annotate {printable(str(self.target))} holds {printable(path.name)}, which "
                                  "faceblocks did not write: it is left alone; move it away or choose another folder")
            png = _tagged_png(img)
            atomic_write(path, lambda f: f.write(png))
            return str(path)
        if self.writer is None:
            self._open_video(pred.path, img)
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        return str(self.target)

    def _open_video(self, source: str, img: np.ndarray) -> None:
        import cv2

        from prepro.outputs import new_writer_id, temp_name

        cap = cv2.VideoCapture(source)
        fps = video_fps(cap) / self.every if cap.isOpened() else 10.0  # still images: ten a second
        cap.release()
        self.size = (img.shape[1], img.shape[0])
        # The temporary name keeps the extension: OpenCV picks the container from it.
        self.tmp = temp_name(self.target, new_writer_id()).with_suffix(".tmp" + self.target.suffix)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self.writer.isOpened():
            raise OutputError(f"OpenCV cannot write the video {self.target}")

    def __exit__(self, exc_type, *exc) -> None:
        if self.writer is None:
            return
        self.writer.release()
        if exc_type is None and self.tmp is not None:
            os.replace(self.tmp, self.target)
        elif self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


CSV_HEADER = ("path", "frame", "time", "face", "left", "top", "right", "bottom", "box_method", "quality", "label")


@contextmanager
def prediction_csv(path: str | None, class_names: list[str], regions: list[str]):
    """A sink writing one CSV row per face (or one per image without a face, with the reason), with
    one column per class probability (``p_<class>``) and per region weight (``w_<region>``). A
    regular file is written under a temporary name and takes its place when every row is in; ``-``
    is standard output, and a pipe or a character device (or a link to one: /dev/stdout) is
    written into, never replaced. A no-op without a path."""
    if path is None:
        yield lambda _pred: None
        return
    with _csv_stream(path) as fh:
        writer = csv.writer(fh)
        extra = [f"p_{c}" for c in class_names] + [f"w_{r}" for r in regions]
        empty = [""] * (len(CSV_HEADER) - 4 + len(extra))

        def sink(pred: ImagePrediction) -> None:
            where = [printable(pred.path), pred.frame, pred.time]
            if not pred.faces:
                writer.writerow(where + [0] + empty + [pred.error or ""])
            for k, f in enumerate(pred.faces):
                writer.writerow(where + [k + 1, *f.box, f.box_method, f.quality, f.label,
                                         *f.probabilities.values(), *f.region_weights.values(), ""])

        writer.writerow([*CSV_HEADER, *extra, "error"])
        yield sink


@contextmanager
def _csv_stream(path: str):
    """A text stream for ``path`` (see `prediction_csv`); a write error is an OutputError."""
    import stat
    import sys

    try:
        if path == "-":
            yield sys.stdout
            sys.stdout.flush()
            return
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            with open(path, "w", encoding="utf-8", newline="") as fh:
                yield fh
            return
        if not stat.S_ISREG(mode):
            raise OutputError(f"--csv {printable(path)} is not a regular file, a pipe or a character device: "
                              "choose a file")
        with _replaced_when_done(Path(path)) as fh:
            yield fh
    except OSError as e:
        raise OutputError(f"cannot write {printable(path)} ({e.strerror or e})") from None


@contextmanager
def _replaced_when_done(path: Path):
    """A new file under a temporary name beside ``path``, renamed to ``path`` when the block ends
    well and removed otherwise."""
    from prepro.outputs import new_writer_id, temp_name

    tmp = temp_name(path, new_writer_id())
    fh = open(tmp, "x", encoding="utf-8", newline="")
    try:
        yield fh
        fh.close()
        os.replace(tmp, path)
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
