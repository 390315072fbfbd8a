"""One annotated video (`predict --annotate out.mp4`): every frame of the source in colour at its
frame rate, each sampled frame with its faces drawn, and the frames between two samples with the
faces of the last sample held (their boxes, blocks and labels), so labels do not flicker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from inference.colour_frames import ColourFrames
from inference.drawing import colour_picture, draw
from inference.predictions import ImagePrediction
from prepro.errors import OutputError
from prepro.outputs import new_writer_id, temp_name

STILL_FPS = 10.0  # still images written into a video: ten a second


@dataclass
class HeldFaces:
    """The faces of a video's last sampled frame, as `draw` takes a cut."""

    faces: list = field(default_factory=list)


class AnnotatedVideo:
    """Writes ``target`` under a temporary name, renamed when `close` is called after success;
    ``on_frame`` (a live window) gets every drawn frame too. Without a target, only ``on_frame``."""

    def __init__(self, target: Path | None, store: ColourFrames, on_frame: Callable[[np.ndarray], None] | None = None):
        self.target, self.store, self.on_frame = target, store, on_frame
        self.writer: Any = None
        self.tmp: Path | None = None
        self.size: tuple[int, int] = (0, 0)
        self.current: str | None = None  # the video whose frames are being written
        self.held = (ImagePrediction(path=""), HeldFaces())

    def add(self, pred: ImagePrediction, cut) -> str | None:
        """Write what ``pred`` annotates: a video's frames up to it (held ones first), or a still
        image once; None when there is nothing to draw (an unreadable input)."""
        if pred.frame is None:
            if cut is None or cut.gray is None:
                return None
            self._write(draw(colour_picture(pred, cut), cut.scale, pred, cut), pred.path)
            return self.written
        if pred.path != self.current:
            self._finish_video()
            self.current = pred.path
        for frame in self.store.take(pred.path, pred.frame):
            if frame.index == pred.frame:
                faces = cut.faces if cut is not None and pred.faces else []
                self.held = (ImagePrediction(path=pred.path, faces=list(pred.faces)), HeldFaces(list(faces)))
            self._write(draw(frame.picture, frame.scale, *self.held), pred.path)
        return self.written

    @property
    def written(self) -> str | None:
        return None if self.target is None else str(self.target)

    def _finish_video(self) -> None:
        """The current video's frames after its last sample, with that sample's faces held."""
        if self.current is not None:
            for frame in self.store.take(self.current):
                self._write(draw(frame.picture, frame.scale, *self.held), self.current)
        self.held = (ImagePrediction(path=""), HeldFaces())

    def _write(self, img: np.ndarray, source: str) -> None:
        import cv2

        if self.on_frame is not None:
            self.on_frame(img)
        if self.target is None:
            return
        if self.writer is None:
            self._open(img, self.store.fps.get(source, STILL_FPS))
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)

    def _open(self, img: np.ndarray, fps: float) -> None:
        import cv2

        self.size = (img.shape[1], img.shape[0])
        # The temporary name keeps the extension: OpenCV picks the container from it.
        self.tmp = temp_name(self.target, new_writer_id()).with_suffix(".tmp" + self.target.suffix)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self.writer.isOpened():
            raise OutputError(f"OpenCV cannot write the video {self.target}")

    def close(self, complete: bool) -> None:
        """Finish the video and put it in place (``complete``), or remove the partial file."""
        if complete:
            self._finish_video()
        if self.writer is None:
            return
        self.writer.release()
        if complete and self.tmp is not None:
            os.replace(self.tmp, self.target)
        elif self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
