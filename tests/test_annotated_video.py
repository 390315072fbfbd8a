"""The annotated video: every source frame in colour at the source's rate, and between sampled
frames each track's last box and label held (the synthetic two-person clip, the shipped model)."""

from __future__ import annotations

import numpy as np
from videofakes import FRAMES, two_person_frames, write_video

from inference.drawing import track_colour
from inference.predict import predict
from inference.predictions import PredictOptions


def _read(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps, frames = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return fps, frames


def _has_colour(frame: np.ndarray, colour, box) -> bool:
    """Whether the box (and label) around ``box`` is drawn in ``colour``: many pixels near it (the
    video codec shifts colours a little; neither the face nor the background comes near)."""
    left, top, right, bottom = (int(v) for v in box)
    region = frame[max(top - 30, 0):bottom + 30, max(left - 30, 0):right + 30].reshape(-1, 3).astype(int)
    return int((np.abs(region - colour).max(1) < 40).sum()) > 100


def test_every_frame_in_colour_with_the_labels_held(tmp_path):
    clip = write_video(tmp_path / "two.avi", two_person_frames())
    out = tmp_path / "labelled.mp4"
    results = list(predict("fer2013", clip, PredictOptions(every=5, annotate=out)))
    fps, frames = _read(out)
    assert len(frames) == FRAMES and abs(fps - 10.0) < 0.01  # the source's frames, at its rate
    assert frames[0].shape == (480, 640, 3)  # full resolution
    skin = frames[0][150:250, 100:160].astype(int)
    assert np.abs(skin[..., 2] - skin[..., 0]).mean() > 20  # colour: red and blue differ on the face
    by_frame = {r.frame: r for r in results}
    source = two_person_frames()
    assert not _has_colour(source[0], track_colour(1), by_frame[0].faces[0].box)
    for k in range(FRAMES):
        sample = by_frame[k - k % 5]  # the frame's own prediction, or the last sample's, held
        for face in sample.faces:
            assert _has_colour(frames[k], track_colour(face.track), face.box), (k, face.track)
