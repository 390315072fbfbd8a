"""What `predict` is asked (`PredictOptions`, each value checked when made) and what it gives:
one `ImagePrediction` per image or video frame, one `FacePrediction` per face.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prepro.distributor import check_jobs
from prepro.inputs import printable
from prepro.settings import check, setting
from prepro.words import counted


@dataclass
class PredictOptions:
    """How `predict` runs; every value is checked when the options are made (InputError)."""

    overrides: dict[str, Any] = setting({}, "face, detector, min_face, min_face_frac to use instead of the "
                                        "model's", "dict")
    jobs: int = setting(1, "processes finding faces; -1 = all cores", "int", low=-1, high=4096)
    batch_size: int = setting(64, "faces per forward pass", "int", low=1, high=4096)
    every: int = setting(1, "videos: predict on every Nth frame", "int", low=1)
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...", "str")
    landmark_model: str | None = setting(None, "dlib 68-point model file; none = the shipped one", "str",
                                         optional=True)
    annotate: str | None = setting(None, "Draw boxes, landmarks, blocks and labels: a folder for images, a .mp4 "
                                   "file for a video.", "str", optional=True, path="any")
    # Faces whose landmark quality is below this get no label: a fit this doubtful is almost surely
    # not on a face (the photo of dogs in ../shared/data/photos, cut with --face aligned, scores
    # 0.002; the hostile-input report saw 0.05 on another face-less photo); 0 labels every fit.
    min_quality: float = setting(0.1, "Give no label to a face whose landmark quality is below this (its blocks "
                                 "are likely misplaced); an image left without a face says so.", "float", low=0,
                                 high=1)
    tta_flip: bool | None = setting(None, "Average each face's prediction with its mirror image's [default: as the "
                                    "model's card says: on for the shipped fer2013 model, off for your own runs].",
                                    "bool", optional=True, cli="--tta-flip/--no-tta-flip")
    tta_shift: bool | None = setting(None, "Also average over the blocks moved by one pixel in each of the 8 "
                                     "directions (18 views with the flip) [default: as the model's card says: on "
                                     "for the shipped fer2013 model, off for your own runs].", "bool",
                                     optional=True, cli="--tta-shift/--no-tta-shift")
    # A file is replaced when done; a pipe or a device is written as the faces come.
    csv: str | None = setting(None, "Also write every face as a CSV row (path, frame, time, box, label, "
                              "probabilities, regions); - writes them to standard output (and the other lines to "
                              "standard error).", "str", optional=True, path="file or -")
    progress: bool = setting(False, "show a progress bar", "bool")
    # The moving average is s = a * s + (1 - a) * p with this a; 0 is off.
    smooth: float = setting(0.0, "Videos and sequences: smooth each face track's probabilities (exponential moving "
                            "average with this weight on the past; the frame's own stay in raw_probabilities).",
                            "float", low=0, high=0.99)
    camera: str | None = setting(None, "Live frames from this camera index or stream URL instead of INPUTs, until it "
                                 "ends or Ctrl-C (everything so far is written).", "str", optional=True,
                                 metavar="N|URL")
    show: bool | None = setting(None, "With --camera: show the annotated frames in a window [default: when a display "
                                "exists].", "bool", optional=True, cli="--show/--no-show")
    sequence: bool = setting(False, "The image INPUTs are the frames of one sequence, in order: their faces get "
                             "track ids.", "bool")

    def __post_init__(self) -> None:
        if isinstance(self.camera, int) and not isinstance(self.camera, bool):
            self.camera = str(self.camera)  # camera=0 is camera "0"
        for name in ("landmark_model", "annotate", "csv"):  # a pathlib.Path is a path too
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        check(self)
        check_jobs(self.jobs)


@dataclass
class FacePrediction:
    box: list[float]  # left, top, right, bottom in original-image pixels
    box_method: str  # how the box was found (hog, cnn, estimated, estimated_fallback)
    quality: float  # landmark quality in [0, 1]
    label: str  # the most probable class
    probabilities: dict[str, float]  # class -> probability
    region_weights: dict[str, float]  # region -> attention weight
    landmarks: list[list[float]] = field(default_factory=list)  # the 68 points [x, y], original-image pixels
    track: int | None = None  # the face's track in a video or image sequence (`inference.tracks`)
    raw_probabilities: dict[str, float] | None = None  # the frame's own, when ``probabilities`` are smoothed


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

    def lines(self) -> list[str]:
        """The prediction as text: why there is none, or a line per face (box, label, the top three
        classes, region weights)."""
        where = printable(self.path) + (f" [frame {self.frame}, {self.time:.2f} s]" if self.frame is not None else "")
        lines = [f"{where}: {self.error}"] if self.error else []
        for k, f in enumerate(self.faces):
            top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
            box = ",".join(f"{v:.0f}" for v in f.box)
            lines.append(f"{where} face {k + 1} [{box}; {f.box_method}, quality {f.quality:.2f}]: {f.label} ("
                         + ", ".join(f"{c} {p:.2f}" for c, p in top) + ") regions "
                         + ", ".join(f"{n} {w:.2f}" for n, w in f.region_weights.items()))
        return lines


@dataclass
class PredictionTally:
    """What a `predict` run gave, counted as its results come."""

    images: int = 0  # images or video frames
    faces: int = 0
    without: int = 0  # images or frames without a prediction
    annotated: bool = False  # an annotated copy was written

    def add(self, r: ImagePrediction) -> None:
        self.images += 1
        self.faces += len(r.faces)
        self.without += r.error is not None
        self.annotated = self.annotated or r.annotated is not None

    def line(self, annotate: str | None) -> str:
        return (f"{counted(self.images, 'image or frame', 'images or frames')}, "
                f"{counted(self.faces, 'face', 'faces')}, {self.without} without a prediction"
                + (f"; annotated in {annotate}" if self.annotated else ""))

    def failure(self, strict: bool) -> str | None:
        """Why the run failed: no image gave a prediction, or (``strict``) one did not; else None."""
        if self.without == self.images or (strict and self.without):
            return (f"{self.without} of {counted(self.images, 'image or frame', 'images or frames')} gave no "
                    "prediction" + (" (--strict)" if self.without < self.images else ""))
        return None
