"""What `predict` is asked (`PredictOptions`, each value checked when made) and what it gives:
one `ImagePrediction` per image or video frame, one `FacePrediction` per face.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prepro.errors import InputError
from prepro.inputs import printable
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
    smooth: float = setting(0.0, "videos and sequences: smooth each track's probabilities, s = a * s + (1 - a) * p "
                            "with this a; 0 = off (the frame's own stay in raw_probabilities)", "float",
                            low=0, high=0.99)
    camera: str | None = setting(None, "read live frames from this camera index (0, 1, ...) or stream URL "
                                 "instead of inputs, until it ends or Ctrl-C", "str", optional=True)
    show: bool | None = setting(None, "live: show the annotated frames in a window; none = when a display "
                                "exists", "bool", optional=True)
    sequence: bool = setting(False, "the image inputs are the frames of one sequence, in order: their faces get "
                             "tracks", "bool")

    def __post_init__(self) -> None:
        if isinstance(self.camera, int) and not isinstance(self.camera, bool):
            self.camera = str(self.camera)  # camera=0 is camera "0"
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
