"""Writing annotated copies (`predict --annotate`): PNG images tagged as faceblocks' own in a
folder, or one video of the annotated frames.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from inference.drawing import colour_picture, draw
from inference.frames import video_fps
from inference.predictions import ImagePrediction
from prepro.errors import OutputError
from prepro.inputs import is_video_file, printable


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def annotated_name(path: str, index: int) -> str:
    """A file name for the annotated copy that cannot leave its folder."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._") or "image"
    return f"{index:05d}_{stem[:80]}.png"


ANNOTATION_SOFTWARE = "faceblocks predict"  # the PNG text tag that proves an annotated copy is faceblocks'


def tagged_png(bgr: np.ndarray) -> bytes:
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


class Annotator:
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

    def __enter__(self) -> "Annotator":
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
            png = tagged_png(img)
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
