"""Live input: a video file stands in for the camera (`inference.live.open_capture` is the one
place a capture is opened); Ctrl-C ends the loop with every output written."""

from __future__ import annotations

import csv
import os
import signal

import pytest
from videofakes import FRAMES, two_person_frames, write_video

import inference.live
from inference.predict import predict
from inference.predictions import PredictOptions
from prepro.errors import InputError


@pytest.fixture
def camera(tmp_path, monkeypatch):
    """Camera 0 is the two-person clip; ``interrupt_at`` sends Ctrl-C when that frame is read."""
    import cv2

    clip = write_video(tmp_path / "two.avi", two_person_frames())
    opened = []

    class Capture:
        interrupt_at = None

        def __init__(self):
            self.cap, self.k = cv2.VideoCapture(str(clip)), 0

        def grab(self):
            if self.k == Capture.interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)
            self.k += 1
            return self.cap.grab()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    def open_capture(source):
        opened.append(source)
        return Capture() if source == "0" else cv2.VideoCapture(source)

    monkeypatch.setattr(inference.live, "open_capture", open_capture)
    return Capture, opened


def _frames_in(path) -> int:
    import cv2

    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def test_the_camera_goes_through_the_frame_loop(camera, tmp_path):
    _capture, opened = camera
    opts = PredictOptions(camera=0, every=5, csv=tmp_path / "live.csv", annotate=tmp_path / "live.mp4", show=False)
    results = list(predict("fer2013", opts=opts))
    assert opened == ["0"] and {r.path for r in results} == {"<camera 0>"}
    assert [r.frame for r in results] == [0, 5, 10, 15] and all(len(r.faces) == 2 for r in results)
    assert len({f.track for r in results for f in r.faces}) == 2
    rows = list(csv.DictReader(open(tmp_path / "live.csv", newline="", encoding="utf-8")))
    assert len(rows) == 8 and rows[0]["path"] == "<camera 0>"
    assert _frames_in(tmp_path / "live.mp4") == FRAMES


def test_ctrl_c_ends_the_loop_and_keeps_everything_so_far(camera, tmp_path):
    capture, _opened = camera
    capture.interrupt_at = 7  # Ctrl-C while frame 7 is read: frames 0..7 are in, 0 and 5 sampled
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a shell's `cmd &`
    opts = PredictOptions(camera="0", every=5, csv=str(tmp_path / "live.csv"), annotate=str(tmp_path / "live.mp4"),
                          show=False)
    results = list(predict("fer2013", opts=opts))
    assert [r.frame for r in results] == [0, 5]
    rows = list(csv.DictReader(open(tmp_path / "live.csv", newline="", encoding="utf-8")))
    assert [r["frame"] for r in rows] == ["0", "0", "5", "5"]
    assert _frames_in(tmp_path / "live.mp4") == 8
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is itself again


def test_camera_errors_are_clear(camera, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="cannot open the camera or stream"):
        list(predict("fer2013", opts=PredictOptions(camera=str(tmp_path / "none.mp4"), show=False)))
    with pytest.raises(InputError, match="or inputs, not both"):
        list(predict("fer2013", [str(tmp_path)], PredictOptions(camera=0)))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(InputError, match="no window can be shown"):
        list(predict("fer2013", opts=PredictOptions(camera=0, show=True)))


def test_cli_camera_smooth_and_the_input_rule(camera, tmp_path):
    """`faceblocks predict MODEL --camera 0 --csv F --smooth A`: the same loop from the command line;
    INPUT and --camera are one or the other."""
    from click.testing import CliRunner

    from cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["predict", "fer2013", "--camera", "0", "--every", "5", "--no-show", "--smooth", "0.8",
                             "--csv", str(tmp_path / "live.csv")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "live.csv", newline="", encoding="utf-8")))
    assert len(rows) == 8 and {row["track"] for row in rows} and "raw_p_happy" in rows[0]
    assert any(row[k] != row["raw_" + k] for row in rows for k in rows[0] if k.startswith("p_"))  # smoothed
    for args in (["predict", "fer2013"], ["predict", "fer2013", "x.jpg", "--camera", "0"]):
        r = runner.invoke(main, args)
        assert r.exit_code == 2 and "INPUT... or --camera" in r.output, r.output
