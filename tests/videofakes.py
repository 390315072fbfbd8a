"""A synthetic two-person video: scikit-image's public-domain astronaut face pasted at two
positions that move across a grey background, written with OpenCV (MJPG in an .avi)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FRAMES = 20
STEP = 3  # pixels each face moves per frame


def astronaut_face() -> np.ndarray:
    """The astronaut's face and hair, BGR (about 190 x 150 pixels)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:210, 150:300, ::-1])


def two_person_frames(n: int = FRAMES) -> list[np.ndarray]:
    """``n`` BGR frames of 480 x 640: one face drifting right from the left, one drifting left from
    the right, never overlapping."""
    face = astronaut_face()
    h, w = face.shape[:2]
    frames = []
    for k in range(n):
        frame = np.full((480, 640, 3), 120, np.uint8)
        for x, y in ((40 + STEP * k, 100 + k), (450 - STEP * k, 180 - k)):
            frame[y:y + h, x:x + w] = face
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path
