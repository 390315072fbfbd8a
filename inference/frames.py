"""What `predict` reads: its inputs as a list, the image files they name, and every image or
sampled video frame as (path, frame, time, image) where image is a path or an array.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator

import numpy as np

from inference.colour_frames import ColourFrames
from prepro.errors import InputError
from prepro.inputs import image_inputs, is_video_file, printable


# One input: a path (an image, a video, a folder or a glob pattern) or an image array.
_INPUT_TYPES = ("inputs must be image or video paths (str or os.PathLike), folders, glob patterns or numpy "
                "image arrays (HxW grey, HxWx3 BGR, HxWx4 BGRA), or a list of them")


def input_list(inputs: Any) -> list[str | np.ndarray]:
    """``inputs`` as a list: a single path or a single array is one input (a string is never
    iterated); anything else than a list of paths and arrays is an InputError."""
    from collections.abc import Iterable, Mapping

    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    elif isinstance(inputs, (bytes, bytearray, Mapping)) or not isinstance(inputs, Iterable):
        raise InputError(f"{_INPUT_TYPES}; got {type(inputs).__name__}")
    items = [x if isinstance(x, np.ndarray) else os.fspath(x) if isinstance(x, os.PathLike) else x
             for x in inputs]
    for k, x in enumerate(items):
        if not isinstance(x, (str, np.ndarray)):
            raise InputError(f"{_INPUT_TYPES}; inputs[{k}] is {type(x).__name__}")
    return items


def listed_inputs(items: list[str | np.ndarray]) -> list[tuple[str, str | None, np.ndarray | None]]:
    """(name, reason, array) for every image: the files the paths name (`image_inputs`: reason
    None when usable) and each array as it is, named ``<array K>`` by its place among the inputs."""
    out: list[tuple[str, str | None, np.ndarray | None]] = []
    for k, x in enumerate(items):
        if isinstance(x, np.ndarray):
            out.append((f"<array {k}>", None, x))
        else:
            out += [(path, reason, None) for path, reason in image_inputs([x])]
    return out


def frame_sources(listed: list[tuple[str, str | None, np.ndarray | None]], every: int,
                  store: ColourFrames | None = None) -> Iterator[tuple[str, int | None, float | None, Any]]:
    """(path, frame, time, image) for every input: an image path or array, a video frame, or the
    reason the input gives nothing (as an InputError in place of the image). With ``store``,
    every frame of every video is kept there in colour for its annotation."""
    for path, reason, array in listed:
        if array is not None:
            yield path, None, None, array
        elif reason is not None:
            yield path, None, None, InputError(reason)
        elif is_video_file(path):
            yield from _video_frames(path, every, store)
        else:
            yield path, None, None, path


def _video_frames(path: str, every: int, store: ColourFrames | None
                  ) -> Iterator[tuple[str, int | None, float | None, Any]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        yield path, None, None, InputError(f"OpenCV cannot read {printable(path)} as a video")
        return
    fps = video_fps(cap)
    try:
        yield from capture_frames(cap, path, every, store, fps, lambda k: k / fps)
    finally:
        cap.release()


def capture_frames(cap, path: str, every: int, store: ColourFrames | None, fps: float,
                   time_of: Callable[[int], float], stop: Callable[[], bool] = lambda: False
                   ) -> Iterator[tuple[str, int | None, float | None, Any]]:
    """The frame loop of a video or a live capture: (path, k, time, grey frame) for every
    ``every``-th frame k, each frame kept in ``store`` when given, until the capture ends or
    ``stop()`` says so; a capture that gives no frame is accounted for with its reason."""
    import cv2

    if store is not None:
        store.fps[path] = fps
    k = decoded = 0
    while not stop() and cap.grab():
        if k % every == 0 or store is not None:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                if store is not None:
                    store.add(path, k, frame)
                if k % every == 0:
                    decoded += 1
                    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                    yield path, k, time_of(k), np.ascontiguousarray(gray)
        k += 1
    if not decoded:  # a video that opens but gives nothing must still be accounted for
        yield path, None, None, InputError(f"no decodable frame in {k} frame(s) of the video")


def video_fps(cap) -> float:
    """The frame rate OpenCV reports for an open capture; 25 when it reports nothing usable."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and 0 < fps < 1000 else 25.0
