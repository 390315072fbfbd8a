"""The colour frames of the videos being annotated, kept in the main process from the moment a
frame is read until its annotated copy is written: every frame, sampled or not, so the annotated
video has the source's frame rate and holds each face's last label between sampled frames.

Frames are kept at full resolution up to `MAX_SIDE` pixels on the long side (larger ones are
reduced to it, with their scale recorded). They wait only while the frames sampled after them are
cut, so the store holds about (2 x jobs + 1) x every frames at most.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

MAX_SIDE = 1920  # an annotated frame's long side; a larger source is reduced to it


@dataclass
class StoredFrame:
    index: int
    picture: np.ndarray  # BGR
    scale: float  # picture pixels per source pixel


@dataclass
class ColourFrames:
    """Frames in reading order, per video path (`add`), taken back in the same order (`take`)."""

    frames: deque = field(default_factory=deque)  # (path, StoredFrame); appended by the frame reader
    fps: dict[str, float] = field(default_factory=dict)  # path -> the source's frame rate

    def add(self, path: str, index: int, frame: np.ndarray) -> None:
        import cv2

        bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[..., :3]
        scale = min(1.0, MAX_SIDE / max(bgr.shape[:2]))
        if scale < 1.0:
            size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self.frames.append((path, StoredFrame(index, np.ascontiguousarray(bgr), scale)))

    def take(self, path: str, upto: int | None = None) -> list[StoredFrame]:
        """The kept frames of ``path`` up to frame ``upto`` (all of them for None), in order. The
        annotator takes every video's frames before the next video's, so they come first."""
        out = []
        while self.frames and self.frames[0][0] == path and (upto is None or self.frames[0][1].index <= upto):
            out.append(self.frames.popleft()[1])
        return out
