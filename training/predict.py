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

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class PredictOptions:
    overrides: dict[str, Any] = field(default_factory=dict)  # face, detector, min_face, min_face_frac to use instead of the model's
    jobs: int = 1  # processes finding faces; -1 = all cores
    batch_size: int = 64  # faces per forward pass
    every: int = 1  # videos: every Nth frame
    device: str = "auto"
    landmark_model: str | None = None  # dlib 68-point model file; None = the shipped one
    annotate: str | None = None  # a folder for annotated images, or an .mp4 file for one annotated video
    progress: bool = False


@dataclass
class FacePrediction:
    box: list[float]  # left, top, right, bottom in original-image pixels
    box_method: str  # how the box was found (hog, cnn, estimated, estimated_fallback)
    quality: float  # landmark quality in [0, 1]
    label: str  # the most probable class
    probabilities: dict[str, float]  # class -> probability
    region_weights: dict[str, float]  # region -> attention weight


@dataclass
class ImagePrediction:
    path: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None  # why the image gave no prediction (unreadable, no face)
    frame: int | None = None  # video frame index
    time: float | None = None  # video time in seconds
    annotated: str | None = None  # the annotated copy, when asked for

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "frame": self.frame, "time": self.time, "error": self.error,
                "annotated": self.annotated, "faces": [f.__dict__ for f in self.faces]}


class Classifier:
    """A checkpoint ready to classify blocks: the network and what it was trained on."""

    def __init__(self, model: str | os.PathLike, device: str = "auto"):
        from prepro.blocks import BlockConfig
        from training.checkpoint import build_model_from_checkpoint, resolve_checkpoint
        from training.errors import CheckpointError
        from training.evaluate import resolve_device

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

    @classmethod
    def load(cls, model: str | os.PathLike, device: str = "auto") -> "Classifier":
        """A run folder, a .pt file, or a shipped model's name (`faceblocks models`)."""
        return cls(model, device)

    def cut_settings(self, overrides: dict[str, Any] | None = None):
        """How to find faces and cut blocks: as the training shards were, with ``overrides``."""
        from prepro.config import PreprocessConfig
        from prepro.settings import from_dict, to_dict

        stored = {k: v for k, v in self.preprocessing.items() if k in ("face", "detection", "blocks", "second_look",
                                                                       "max_megapixels", "work_max_side")}
        cfg = from_dict(PreprocessConfig, stored)
        flat = {**{k: v for k, v in to_dict(cfg).items() if k not in ("detection", "blocks")},
                **to_dict(cfg)["detection"], **to_dict(cfg)["blocks"], **(overrides or {})}
        from prepro.settings import from_mapping

        return from_mapping(PreprocessConfig, flat).cut_settings()

    def classify(self, blocks: list) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, region weights) for a list of `prepro.blocks.Blocks`, one forward pass."""
        import torch

        from training.data import normalize

        batch = {r: torch.from_numpy(np.stack([getattr(b, r) for b in blocks])).unsqueeze(1)
                 .to(self.device).float().div_(255.0) for r in self.regions}
        with torch.no_grad():
            out = self.model(normalize(batch, self.regions))
        return out.logits.float().softmax(dim=1).cpu().numpy(), out.region_weights.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Sources: images and video frames, as (path, frame, time, image) where image is a path or an array


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _sources(inputs: Iterable[str], every: int) -> Iterator[tuple[str, int | None, float | None, Any]]:
    from prepro.readers import expand_image_inputs

    for item in inputs:
        if os.path.isfile(item) and _is_video(item):
            yield from _video_frames(item, every)
        else:
            for p in expand_image_inputs([item]):
                yield p, None, None, p


def _video_frames(path: str, every: int) -> Iterator[tuple[str, int | None, float | None, Any]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        yield path, None, None, InputError(f"OpenCV cannot read {path} as a video")
        return
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and fps > 0 else 25.0
    k = 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            if k % every == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                    yield path, k, k / fps, np.ascontiguousarray(gray)
            k += 1
    finally:
        cap.release()


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


def predict(model: str | os.PathLike, inputs: Iterable[str], opts: PredictOptions = PredictOptions()
            ) -> Iterator[ImagePrediction]:
    """Classify every face of every input image or sampled video frame, in input order."""
    from joblib import delayed
    from tqdm import tqdm

    from prepro.distributor import run_in_order
    from prepro.faces import FaceCutter
    from prepro.landmarks import LandmarkModelFile

    inputs = list(inputs)
    if not inputs:
        raise InputError("no inputs given")
    classifier = Classifier(model, opts.device)
    landmark = LandmarkModelFile.find(opts.landmark_model)
    landmark.load()  # a file that is no landmark model is one clear error before any work
    cutter = FaceCutter(classifier.cut_settings(opts.overrides), landmark)
    tasks = (delayed(_cut_chunk)(cutter, chunk, opts.annotate is not None)
             for chunk in _chunked(_sources(inputs, opts.every), 8))
    cuts = (c for chunk in run_in_order(tasks, opts.jobs) for c in chunk)
    with _Annotator(opts.annotate) as annotator, tqdm(unit="img", disable=not opts.progress) as bar:
        for batch in _face_batches(cuts, opts.batch_size):
            for pred, cut in _classify(classifier, batch):
                if annotator.active and cut is not None and cut.gray is not None:
                    pred.annotated = annotator.add(pred, cut)
                bar.update(1)
                yield pred


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


def _classify(classifier: Classifier, batch: list) -> list[tuple[ImagePrediction, Any]]:
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
                region_weights={r: round(float(x), 4) for r, x in zip(classifier.regions, w)}))
        out.append((pred, cut))
    return out


# ---------------------------------------------------------------------------------------------
# Annotation and CSV


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def annotated_name(path: str, index: int) -> str:
    """A file name for the annotated copy that cannot leave its folder."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._") or "image"
    return f"{index:05d}_{stem[:80]}.png"


def draw(gray: np.ndarray, scale: float, pred: ImagePrediction, cut) -> np.ndarray:
    """A colour copy of the decoded image with each face's box, landmarks, block outlines and label."""
    import cv2

    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(img.shape[:2]) / 400))
    for fc, fp in zip(cut.faces, pred.faces):
        l, t, r, b = (v * scale for v in fc.face.box)
        cv2.rectangle(img, (int(l), int(t)), (int(r), int(b)), (0, 255, 255), thick)
        for x, y in (fc.face.landmarks + 0.5) * scale - 0.5:
            cv2.circle(img, (int(round(x)), int(round(y))), thick, (0, 255, 0), -1)
        for name, colour in (("eyes", (255, 128, 0)), ("mouth", (0, 0, 255))):
            m = np.vstack([getattr(fc.blocks, f"{name}_affine"), [0, 0, 1]])
            h, w = getattr(fc.blocks, name).shape
            corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64).T
            pts = ((np.linalg.inv(m) @ corners)[:2].T + 0.5) * scale - 0.5
            cv2.polylines(img, [np.round(pts).astype(np.int32)], True, colour, thick)
        text = f"{fp.label} {fp.probabilities[fp.label]:.2f}"
        cv2.putText(img, text, (int(l), max(int(t) - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick,
                    (0, 255, 255), thick, cv2.LINE_AA)
    return img


class _Annotator:
    """Writes annotated images into a folder, or the annotated frames of a video into one .mp4."""

    def __init__(self, target: str | None):
        self.target = Path(target) if target else None
        self.video = self.target is not None and self.target.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv")
        self.writer: Any = None
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

        img = draw(cut.gray, cut.scale, pred, cut)
        self.count += 1
        if not self.video:
            ok, buf = cv2.imencode(".png", img)
            path = self.target / annotated_name(pred.path, self.count - 1)
            atomic_write(path, lambda f: f.write(buf.tobytes()))
            return str(path)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                                          (img.shape[1], img.shape[0]))
            if not self.writer.isOpened():
                raise OutputError(f"OpenCV cannot write the video {self.target}")
            self.size = (img.shape[1], img.shape[0])
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        return str(self.target)

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.release()


CSV_HEADER = ("path", "frame", "time", "face", "left", "top", "right", "bottom", "box_method", "quality", "label",
              "probabilities", "region_weights", "error")


@contextmanager
def prediction_csv(path: str | None):
    """A sink writing one CSV row per face (or one per image without a face, with the reason);
    probabilities and region weights as JSON objects. A no-op without a path."""
    import json

    if path is None:
        yield lambda _pred: None
        return
    try:
        fh = open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
    with fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)

        def sink(pred: ImagePrediction) -> None:
            where = [pred.path, pred.frame, pred.time]
            if not pred.faces:
                writer.writerow(where + [0] + [""] * 9 + [pred.error or ""])
            for k, f in enumerate(pred.faces):
                writer.writerow(where + [k + 1, *f.box, f.box_method, f.quality, f.label,
                                         json.dumps(f.probabilities), json.dumps(f.region_weights), ""])
        yield sink
