"""Live input (`predict --camera N` or a stream URL): frames read from an OpenCV capture through
the same frame loop as video files, until the capture ends or Ctrl-C (or q in the window) stops
it; what was read by then is predicted and written as usual.

`open_capture` is the one place a capture is opened, so a test can stand a video file in for a
camera.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from inference.colour_frames import ColourFrames
from inference.frames import capture_frames, video_fps
from prepro.errors import InputError
from prepro.inputs import printable

WINDOW = "faceblocks predict (q or Ctrl-C ends)"


def open_capture(source: str) -> Any:
    """An OpenCV capture of camera ``source`` (a number: its index) or of a stream URL."""
    import cv2

    return cv2.VideoCapture(int(source) if source.isdigit() else source)


def live_name(source: str) -> str:
    """The ``path`` a live source's predictions carry: ``<camera N>`` or the URL."""
    return f"<camera {source}>" if source.isdigit() else source


class Stop:
    """Set by Ctrl-C (SIGINT) or the window's q key: the frame loop ends after the frame it is on."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self) -> bool:
        return self.asked


@contextmanager
def stop_on_interrupt(live: bool = True) -> Iterator[Stop]:
    """A `Stop` that Ctrl-C sets while the block runs (instead of raising KeyboardInterrupt), so
    the outputs are finished with every frame read so far; the previous handler comes back after.
    Not ``live`` (files), Ctrl-C stays an interrupt: the outputs of a cut-short run are not kept."""
    stop = Stop()
    if not live or threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach only the main thread; there Ctrl-C stays an interrupt
        return
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: setattr(stop, "asked", True))
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def live_frames(source: str, every: int, store: ColourFrames | None, stop: Stop
                ) -> Iterator[tuple[str, int | None, float | None, Any]]:
    """(name, frame, seconds since the start, grey frame) for every ``every``-th frame of the
    live ``source``; a source that does not open is an InputError."""
    cap = open_capture(source)
    if not cap.isOpened():
        raise InputError(f"OpenCV cannot open the camera or stream {printable(source)}")
    start = time.monotonic()
    try:
        yield from capture_frames(cap, live_name(source), every, store, video_fps(cap),
                                  lambda _k: time.monotonic() - start, stop)
    finally:
        cap.release()


def display_available() -> bool:
    """Whether a window can be shown: a display to show it on, and an OpenCV built with windows
    (the opencv-python-headless faceblocks installs has none; opencv-python has)."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return False
    return True


class LiveWindow:
    """Shows each annotated frame as it is drawn; the q key sets ``stop``."""

    def __init__(self, stop: Stop):
        self.stop = stop

    def __call__(self, img) -> None:
        import cv2

        cv2.imshow(WINDOW, img)
        if cv2.waitKey(1) & 0xFF == ord("q"):
            self.stop.asked = True

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(WINDOW)


@contextmanager
def live_window(show: bool | None, stop: Stop) -> Iterator[LiveWindow | None]:
    """A `LiveWindow` when ``show`` (an error without a display), or when ``show`` is None and a
    display is there; None when ``show`` is False."""
    if show is False or (show is None and not display_available()):
        yield None
        return
    if not display_available():
        raise InputError("no window can be shown here (no display, or OpenCV without windows: "
                         "pip install opencv-python); leave the window off")
    window = LiveWindow(stop)
    try:
        yield window
    finally:
        window.close()
