"""prepro.landmark_refine: the face frame, the features, and the shipped stages refining the
network's points (closer to dlib's, the same whatever the batch, degenerate points left alone)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from prepro import landmark_net as ln
from prepro import landmark_refine as lr
from prepro import landmarks as L
from prepro.landmark_models import load_mean_shape

FER_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "test"


def _face_at(scale: float, angle: float, centre=(24.0, 26.0)) -> np.ndarray:
    m = load_mean_shape()
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return m @ rot.T * scale + centre


def test_the_pose_of_a_turned_and_scaled_mean_face_is_its_turn_and_scale() -> None:
    pose = lr.face_pose(np.stack([_face_at(17.0, 0.3), _face_at(5.0, -1.0)]))
    assert np.allclose(np.abs(pose), [17.0, 5.0]) and np.allclose(np.angle(pose), [0.3, -1.0])


def test_face_moves_and_image_moves_are_each_others_inverse() -> None:
    rng = np.random.default_rng(0)
    moves, pose = rng.normal(size=(3, 136)), np.array([2 + 1j, -3j, 0.5])
    assert np.allclose(lr.to_face_moves(lr.to_image_moves(moves, pose), pose), moves)
    # a move to the face's right (its own x) is along the turned x axis in the image
    one = np.zeros((1, 136))
    one[0, 36] = 1.0
    assert np.allclose(lr.to_image_moves(one, np.array([1j]))[0, 36], [0.0, 1.0])


def test_octant_bins_are_those_of_the_gradient_angle() -> None:
    rng = np.random.default_rng(1)
    gx, gy = rng.normal(size=(2, 5000)).astype(np.float32)
    angle_bins = ((np.arctan2(gy, gx) + np.pi) * (lr.BINS / (2 * np.pi))).astype(int) % lr.BINS
    assert (lr._octants(gx, gy) == angle_bins).all()


def test_features_follow_the_face_not_the_image() -> None:
    """The features of a face and of the same face turned by 90 degrees (image and points) are the
    same: the grid turns with the face."""
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    marks = _face_at(12.0, 0.0)[None]
    turned = np.ascontiguousarray(np.rot90(img))  # (x, y) -> (y, 47 - x)
    turned_marks = np.stack([marks[..., 1], 47 - marks[..., 0]], axis=-1)
    a, _ = lr.stage_features([img], marks, 0.08)
    b, _ = lr.stage_features([turned], turned_marks, 0.08)
    assert a.shape == (1, lr.n_features()) and np.abs(a - b).max() < 1e-3


def test_the_shipped_stages_and_degenerate_points() -> None:
    net = ln.load_landmark_net()
    assert len(net.refine) >= 1 and all(st.weights.shape[0] == lr.n_features() for st in net.refine)
    grays = [np.full((48, 48), 100, np.uint8)] * 3
    marks = np.stack([_face_at(12.0, 0.0), np.full((68, 2), np.nan), np.full((68, 2), 20.0)])
    out, moves = lr.refine(grays, marks, net.refine)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all() and (out[2] == 20.0).all()
    assert (moves[1:] == 0).all() and (moves[0] >= 0).all() and moves[0, 0] < 1.0  # a face on a flat image
    unmoved, none = lr.refine(grays, marks[:1], ())
    assert (unmoved == marks[:1]).all() and (none == 0).all()


def _real_faces(n: int) -> list[np.ndarray]:
    if FER_TEST.is_dir():
        from prepro.image_io import decode_gray

        return [decode_gray(f).gray for f in sorted(FER_TEST.glob("*/PublicTest_*.jpg"))[:n]]
    from tests.test_pipeline import _face_like

    return [_face_like(i) for i in range(n)]


def test_a_face_gets_the_same_refined_points_whatever_batch_it_is_in() -> None:
    net = ln.load_landmark_net()
    grays = _real_faces(20)
    every = ln.fits_from_net(grays, [None] * len(grays), net)
    for n in (1, 5, 17):
        some = ln.fits_from_net(grays[:n], [None] * n, net)
        # the points exactly; the quality to float64 rounding (its appearance score, as dlib's quality)
        assert all((a.landmarks == b.landmarks).all() and abs(a.quality - b.quality) < 1e-9 for a, b in zip(some, every))


@pytest.mark.skipif(not FER_TEST.is_dir(), reason="no shared FER2013 data")
def test_refinement_brings_the_network_closer_to_dlib_on_real_faces() -> None:
    import dataclasses

    from prepro.faces import CutSettings, FaceCutter

    grays = _real_faces(60)
    net = ln.load_landmark_net()
    plain = dataclasses.replace(net, refine=())
    detect = FaceCutter(CutSettings(face_mode="detect"), L.LandmarkModelFile.default())
    before, after = [], []
    for g, fp, fr in zip(grays, ln.fits_from_net(grays, [None] * 60, plain), ln.fits_from_net(grays, [None] * 60, net)):
        d = detect.cut(g)
        if not d.failure:
            yard = d.faces[0].face.landmarks
            before.append(L.landmark_error(fp.landmarks, yard))
            after.append(L.landmark_error(fr.landmarks, yard))
    assert len(after) >= 30 and np.median(after) < 0.8 * np.median(before)
