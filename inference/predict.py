"""Predictions on new images and videos, cut exactly as a model's training shards were.

``predict(model, inputs, PredictOptions())`` yields one `ImagePrediction` per image (or sampled
video frame), in input order: every face found (largest first) with its box, label, class
probabilities and per-region attention weights, or the reason there is none. Faces are found in
parallel (``jobs`` processes, the `prepro.faces.FaceCutter` every command shares) and classified
in batches of ``batch_size`` faces across images and frames.

    from inference.predict import Classifier, PredictOptions, predict
    for result in predict("fer2013", ["photo.jpg"]):           # a shipped model, by name
        print(result.path, [(f.label, f.box) for f in result.faces])
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Iterator

import numpy as np

from inference.annotate import Annotator
from inference.classifier import Classifier
from inference.colour_frames import ColourFrames
from inference.frames import frame_sources, input_list, listed_inputs
from inference.live import live_frames, live_window, stop_on_interrupt
from inference.predictions import FacePrediction, ImagePrediction, PredictOptions
from inference.tables import prediction_csv
from inference.tracks import FaceTracker
from prepro.distributor import run_in_order, worker_count
from prepro.errors import InputError, OutputError
from prepro.faces import FaceCutter
from prepro.inputs import is_inside, is_video_file, printable
from prepro.model_files import LandmarkModelFile


def predict(model: str | os.PathLike | Classifier,
            inputs: str | os.PathLike | np.ndarray | Iterable[str | os.PathLike | np.ndarray] = (),
            opts: PredictOptions = PredictOptions()) -> Iterator[ImagePrediction]:
    """Classify every face of every input image or sampled video frame, in input order.

    ``inputs`` is one input or a list of them: a path to an image or a video, a folder, a glob
    pattern, or an image as a numpy uint8 array: HxW grey, or HxWx3 / HxWx4 in OpenCV's BGR /
    BGRA channel order (what ``cv2.imread`` and ``cv2.VideoCapture`` give; convert an RGB array
    with ``rgb[..., ::-1]``). An array's predictions are named ``<array K>``, K its place.
    ``model``: a run folder, a .pt file, a shipped model's name, or a loaded `Classifier` (its
    own device and flip test-time augmentation). With ``opts.camera`` there are no inputs: the camera's (or stream's) frames are read until it
    ends or Ctrl-C, each predicted as it comes (`inference.live`)."""
    from tqdm import tqdm

    inputs, live = input_list(inputs), opts.camera is not None
    if live and inputs:
        raise InputError(f"predict reads the camera or stream {printable(opts.camera)} or inputs, not both")
    # A wrong model is the first thing said; a loaded Classifier is used as it is.
    classifier = model if isinstance(model, Classifier) else Classifier(model, opts.device, opts.tta_flip, opts.tta_shift)
    listed = [] if live else listed_inputs(inputs)
    if not live and not listed:
        raise InputError("no image or video files among the inputs" if inputs else "no inputs given")
    check_outputs_apart(inputs, listed, opts)
    cutter = _face_cutter(classifier, opts)
    tracker = FaceTracker(opts.smooth, opts.sequence)
    with (stop_on_interrupt(live) as stop, live_window(live and opts.show, stop) as window,
          prediction_csv(opts.csv, classifier.class_names, classifier.regions, opts.smooth > 0) as table,
          tqdm(unit="img", disable=not opts.progress) as bar):
        # An annotated video keeps every frame in colour until drawn (`inference.colour_frames`).
        as_video = window is not None or (opts.annotate is not None and is_video_file(opts.annotate))
        store = ColourFrames() if as_video else None
        with Annotator(opts.annotate, store, window) as annotator:
            cuts = _live_cuts(cutter, opts, store, stop) if live else _file_cuts(cutter, listed, opts, store)
            for batch in _face_batches(cuts, 1 if live else opts.batch_size):  # live: each frame as it comes
                for pred, cut in _classify(classifier, batch, opts.min_quality):
                    tracker.update(pred)
                    if annotator.active:
                        pred.annotated = annotator.add(pred, cut)
                    table(pred)
                    bar.update(1)
                    bar.clear()  # the caller prints this prediction: on its own line, not after the bar
                    yield pred


def _face_cutter(classifier: Classifier, opts: PredictOptions):
    """The face cutter that cuts as ``classifier``'s training shards were (with the overrides)."""
    landmark = LandmarkModelFile.find(opts.landmark_model)
    landmark.load()  # a file that is no landmark model is one clear error before any work
    return FaceCutter(classifier.cut_settings(opts.overrides), landmark)


def _file_cuts(cutter, listed: list, opts: PredictOptions, store: ColourFrames | None) -> Iterator:
    """The cuts of every image and sampled video frame of ``listed``, in order, found in parallel.
    While frames wait in ``store`` for their annotation, a task is one frame so few of them wait."""
    from joblib import delayed

    tasks = (delayed(_cut_chunk)(cutter, chunk, opts.annotate is not None)
             for chunk in _chunked(frame_sources(listed, opts.every, store), 8 if store is None else 1))
    return (c for chunk in run_in_order(tasks, _jobs_for(listed, opts.jobs)) for c in chunk)


def _live_cuts(cutter, opts: PredictOptions, store: ColourFrames | None, stop) -> Iterator:
    """The cuts of the live source's sampled frames, each cut here as it is read (no worker queue
    between the camera and its predictions)."""
    for item in live_frames(opts.camera, opts.every, store, stop):
        yield from _cut_chunk(cutter, [item], opts.annotate is not None)


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


def _jobs_for(listed: list[tuple[str, str | None, np.ndarray | None]], jobs: int) -> int:
    """No more worker processes than chunks of work: each one loads the landmark model (about a
    second), so one photo is found in this process's time, not that of idle workers starting."""
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
