"""Inputs named on a command line (predict, preview): files, folders and glob patterns.

Every input is accounted for: `image_inputs` returns each path with ``None`` (usable) or the
reason it cannot be read, in a stable order. Nothing here opens a file, so a FIFO or a device
named like an image is reported, never read (reading one would block forever).
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

NOT_FOUND = "no such file, folder or matching pattern"


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of `IMG_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def is_video_file(name: str) -> bool:
    """True when ``name`` has one of `VIDEO_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(VIDEO_EXTENSIONS)


def utf8_text(name: str) -> str:
    """``name`` encodable as UTF-8: undecodable bytes (surrogate escapes) shown as backslash escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def printable(name: str) -> str:
    """``name`` safe to show on a terminal or in JSON: undecodable bytes and control characters
    (newlines, escape sequences) become backslash escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in utf8_text(name))


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when the real path of ``path`` is the real path of ``folder`` or lies below it."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, top]) == top


def _file_problem(path: str) -> str | None:
    """Why ``path`` (followed if a link) cannot be read as a file, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not stat.S_ISREG(mode):
        return "not a regular file (a folder, FIFO, device or socket)"
    return None


def _folder_items(folder: str) -> list[tuple[str, str | None]]:
    """The image files below ``folder`` (sorted, recursively). A link that leads outside the folder
    is listed with its reason and not read, as `preprocess` does."""
    out: list[tuple[str, str | None]] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not is_image_file(name):
                continue
            path = os.path.join(root, name)
            if os.path.islink(path) and not is_inside(path, folder):
                out.append((path, f"a symbolic link leading outside {printable(folder)}"))
            else:
                out.append((path, _file_problem(path)))
    return out


def image_inputs(inputs: Iterable[str]) -> list[tuple[str, str | None]]:
    """(path, reason) for every file the inputs name: a file as given (an image or a video), the
    images of a folder, or the files a glob pattern matches; ``reason`` is None for a usable file
    and says why otherwise (missing, not a regular file, a link out of its folder)."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        if os.path.isdir(item):
            out += _folder_items(item)
        elif os.path.lexists(item):
            out.append((item, _file_problem(item)))
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True) if not os.path.isdir(m))
            out += [(m, _file_problem(m)) for m in matches] or [(item, NOT_FOUND)]
    return out
