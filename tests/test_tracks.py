"""Face tracks: ids kept from frame to frame by box overlap, in the records, the CSV and the JSON;
probabilities smoothed along a track on request, the raw ones kept."""

from __future__ import annotations

import csv
import json

import pytest
from videofakes import FRAMES, two_person_frames, write_video

from inference.predict import predict
from inference.predictions import FacePrediction, ImagePrediction, PredictOptions
from inference.tracks import TRACK_GAP, FaceTracker, box_iou


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("tracks") / "two.avi", two_person_frames())


@pytest.mark.parametrize("every", [1, 5])
def test_two_people_keep_their_tracks(clip, tmp_path, every):
    out = tmp_path / "p.csv"
    results = list(predict("fer2013", clip, PredictOptions(every=every, csv=out)))
    assert [r.frame for r in results] == list(range(0, FRAMES, every))
    assert all(len(r.faces) == 2 for r in results), [r.error for r in results]
    # The person on the left stays one track, the one on the right another: no id switch.
    left = {min(r.faces, key=lambda f: f.box[0]).track for r in results}
    right = {max(r.faces, key=lambda f: f.box[0]).track for r in results}
    assert len(left) == 1 and len(right) == 1 and left != right and None not in left | right
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert {r["track"] for r in rows} == {str(t) for t in left | right}
    assert json.loads(json.dumps(results[0].to_dict()))["faces"][0]["track"] in left | right


def _frame(k: int, *boxes, probs=None) -> ImagePrediction:
    faces = [FacePrediction(box=list(b), box_method="hog", quality=1.0, label="a",
                            probabilities=dict(probs or {"a": 1.0, "b": 0.0}), region_weights={})
             for b in boxes]
    return ImagePrediction(path="v.mp4", frame=k, faces=faces)


def test_a_track_survives_a_short_gap_and_ends_after_a_long_one():
    tracker = FaceTracker()
    first = _frame(0, (0, 0, 10, 10))
    tracker.update(first)
    for k in range(1, TRACK_GAP + 1):
        tracker.update(_frame(k))  # the face is missed on TRACK_GAP sampled frames
    back = _frame(TRACK_GAP + 1, (1, 0, 11, 10))
    tracker.update(back)
    assert back.faces[0].track == first.faces[0].track == 1
    for k in range(TRACK_GAP + 2, 2 * TRACK_GAP + 3):
        tracker.update(_frame(k))
    late = _frame(2 * TRACK_GAP + 3, (1, 0, 11, 10))
    tracker.update(late)
    assert late.faces[0].track == 2


def test_still_images_get_tracks_only_as_a_sequence():
    stills = [ImagePrediction(path=f"{k}.png", faces=_frame(k, (0, 0, 10, 10)).faces) for k in range(2)]
    FaceTracker().update(stills[0])
    assert stills[0].faces[0].track is None
    tracker = FaceTracker(sequence=True)
    for s in stills:
        tracker.update(s)
    assert [s.faces[0].track for s in stills] == [1, 1]


def test_smoothing_is_an_exponential_moving_average_and_keeps_the_raw_probabilities():
    tracker = FaceTracker(smooth=0.75)
    a, b = _frame(0, (0, 0, 10, 10)), _frame(1, (0, 0, 10, 10), probs={"a": 0.0, "b": 1.0})
    tracker.update(a)
    tracker.update(b)
    face = b.faces[0]
    assert face.raw_probabilities == {"a": 0.0, "b": 1.0}
    assert face.probabilities == {"a": 0.75, "b": 0.25} and face.label == "a"


def test_box_iou():
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0, 0] == pytest.approx(50 / 150) and iou[0, 1] == 0


def test_the_table_has_the_raw_probabilities_beside_the_smoothed_ones():
    from inference.tables import table_columns, table_rows

    tracker = FaceTracker(smooth=0.5)
    frames = [_frame(0, (0, 0, 10, 10)), _frame(1, (0, 0, 10, 10), probs={"a": 0.0, "b": 1.0})]
    for f in frames:
        tracker.update(f)
    columns = table_columns(["a", "b"], [], smoothed=True)
    [row] = table_rows(frames[1], columns)
    got = dict(zip(columns, row))
    assert (got["track"], got["p_a"], got["raw_p_a"], got["raw_p_b"]) == (1, 0.5, 0.0, 1.0)
    assert "raw_p_a" not in table_columns(["a", "b"], [])
