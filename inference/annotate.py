"""Writing annotated copies (`predict --annotate`): PNG images tagged as faceblocks' own in a
folder, or one video of the annotated frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable
import numpy as np

from inference.annotated_video import AnnotatedVideo
from inference.colour_frames import ColourFrames
from inference.drawing import colour_picture, draw
from inference.predictions import ImagePrediction
from prepro.errors import OutputError
from prepro.inputs import is_video_file, printable
from prepro.outputs import atomic_write


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
    """Writes annotated images into a folder, or every annotated frame into one video file
    (`inference.annotated_video`; its colour frames come from ``store``)."""

    def __init__(self, target: str | None, store: ColourFrames | None = None,
                 on_frame: Callable[[np.ndarray], None] | None = None):
        self.target = Path(target) if target else None
        as_video = self.target is not None and is_video_file(self.target.name)
        self.video = (AnnotatedVideo(self.target if as_video else None,
                                     store if store is not None else ColourFrames(), on_frame)
                      if as_video or on_frame is not None else None)
        self.count = 0

    @property
    def active(self) -> bool:
        return self.target is not None or self.video is not None

    def __enter__(self) -> "Annotator":
        if self.target is not None and self.video is None:
            try:
                self.target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create {self.target} ({e.strerror or e})") from None
        return self

    def add(self, pred: ImagePrediction, cut) -> str | None:
        """Annotate ``pred``; the file written to, or None for an input with nothing to draw."""
        if self.video is not None:
            return self.video.add(pred, cut)
        if cut is None or cut.gray is None:
            return None
        img = draw(colour_picture(pred, cut), cut.scale, pred, cut)
        self.count += 1
        path = self.target / annotated_name(pred.path, self.count - 1)
        if (path.exists() or path.is_symlink()) and not is_own_annotation(path):
            raise OutputError(f"--annotate {printable(str(self.target))} holds {printable(path.name)}, which "
                              "faceblocks did not write: it is left alone; move it away or choose another folder")
        png = tagged_png(img)
        atomic_write(path, lambda f: f.write(png))
        return str(path)

    def __exit__(self, exc_type, *exc) -> None:
        if self.video is not None:
            self.video.close(complete=exc_type is None)
