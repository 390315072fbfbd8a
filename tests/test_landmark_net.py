"""prepro.landmark_net (`--landmarks net`): the mirror permutation, the shipped file and its card,
the crop geometry, predictions on real faces, and preprocess end to end recording the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from prepro import landmark_net as ln
from prepro import landmarks as L
from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import DataError, InputError
from prepro.faces import CutSettings, FaceCutter
from prepro.landmark_models import load_mean_shape
from prepro.pipeline import run_preprocess

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FER_TEST = SHARED_DATA / "fer2013" / "test"
needs_fer = pytest.mark.skipif(not FER_TEST.is_dir(), reason="no shared FER2013 data")


def _fer_files(n: int) -> list[Path]:
    return sorted(FER_TEST.glob("*/PublicTest_*.jpg"))[:n]


# ------------------------------------------------------------------------------------------------
# mirroring


def test_mirror_permutation_pairs_the_ibug_points() -> None:
    p = ln.mirror_permutation()
    assert sorted(p) == list(range(68)) and (p[p] == np.arange(68)).all()  # a permutation, its own inverse
    pairs = {0: 16, 8: 8, 17: 26, 21: 22, 27: 27, 30: 30, 31: 35, 33: 33, 36: 45, 39: 42, 40: 47, 41: 46,
             48: 54, 51: 51, 55: 59, 57: 57, 60: 64, 62: 62, 65: 67, 66: 66}
    assert all(p[a] == b for a, b in pairs.items())


def test_mirrored_mean_face_is_the_mean_face() -> None:
    m = load_mean_shape()  # centred: the mirror axis is x = 0
    mirrored = m[ln.mirror_permutation()] * [-1, 1]
    assert np.abs(mirrored - m).max() < 0.05  # inter-ocular units: the mean face is nearly symmetric
    wrong = m * [-1, 1]  # mirrored without the permutation: eyes land on eyes of the other side
    assert np.abs(wrong - m).max() > 0.5


def test_mirror_landmarks_twice_is_the_identity() -> None:
    pts = np.random.default_rng(0).uniform(0, 40, (3, 68, 2))
    once = ln.mirror_landmarks(pts, 40)
    assert np.allclose(ln.mirror_landmarks(once, 40), pts)
    assert np.allclose(once[:, 36, 0], 39 - pts[:, 45, 0])  # the right eye's outer corner <- the left's


# ------------------------------------------------------------------------------------------------
# the shipped file


def test_shipped_network_loads_without_pickle_and_has_its_card() -> None:
    assert ln.NET_FILE.stat().st_size <= 2_000_000
    with np.load(ln.NET_FILE, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    net = ln.load_landmark_net()
    card = net.card
    assert card["made_by"] == "benchmarks/make_landmark_net.py" and "make_landmark_net.py" in card["command"]
    assert "research" in card["terms"] and L.LANDMARK_MODEL_TERMS in card["terms"]
    assert "Training" in card["data"] and "PublicTest never read" in card["data"]
    assert 0 <= card["held_back"]["above_0.10"] <= 1


def test_a_damaged_network_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "net.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="reinstall"):
        ln.load_landmark_net(str(bad))
    np.savez(tmp_path / "partial.npz", side=np.array(40))
    with pytest.raises(DataError):
        ln.load_landmark_net(str(tmp_path / "partial.npz"))


def test_predict_refuses_crops_of_another_size() -> None:
    net = ln.load_landmark_net()
    with pytest.raises(DataError, match="crops"):
        net.predict(np.zeros((2, net.side + 1, net.side), np.uint8))


# ------------------------------------------------------------------------------------------------
# crop geometry


def test_cut_crop_of_the_whole_image_at_its_own_size_is_the_image() -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8)
    assert (ln.cut_crop(img, ln.whole_image_box(img), 40) == img).all()
    assert (ln.cut_crop(img, (5, 7, 25, 27), 20) == img[7:27, 5:25]).all()  # a box: its pixels


def test_fit_from_a_box_lands_in_the_original_pixels() -> None:
    """A face shrunk into a larger canvas: the fit from its box matches the crop's fit moved there."""
    import cv2

    net = ln.load_landmark_net()
    face = _face_crop()
    crop_fit = ln.fits_from_net([face], [None], net)[0]
    canvas = np.full((200, 200), int(face.mean()), np.uint8)
    canvas[60:156, 30:126] = cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR)  # 2x, at (30, 60)
    side = 96 / net.margin[2]
    cx, cy = 30 + 48 - net.margin[0] * side, 60 + 48 - net.margin[1] * side
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)  # its crop box is the 96 px face
    box_fit = ln.fits_from_net([canvas], [box], net)[0]
    moved = (crop_fit.landmarks + 0.5) * 2 - 0.5 + [30, 60]
    assert box_fit.box == box
    # The network sees the face resampled differently (96 -> 40 px against 48 -> 40), so the two
    # fits differ a little (0.022 inter-ocular distances on a real face, 0.039 on the synthetic one);
    # a wrong mapping back to the original pixels (scale, offset) is off by far more.
    assert L.landmark_error(box_fit.landmarks, moved) < 0.06


def _face_crop() -> np.ndarray:
    if FER_TEST.is_dir():
        from prepro.image_io import decode_gray

        return decode_gray(_fer_files(1)[0]).gray
    from tests.test_pipeline import _face_like

    return _face_like(0)


# ------------------------------------------------------------------------------------------------
# real faces, and the cutter


@needs_fer
def test_predict_on_real_fer2013_crops_agrees_with_dlib() -> None:
    from prepro.image_io import decode_gray

    grays = [decode_gray(f).gray for f in _fer_files(40)]
    detect = FaceCutter(CutSettings(face_mode="detect"), L.LandmarkModelFile.default())
    net = ln.load_landmark_net()
    marks, quality = net.predict(np.stack([ln.cut_crop(g, ln.whole_image_box(g), net.side) for g in grays]))
    assert marks.shape == (40, 68, 2) and quality.shape == (40,)
    assert np.isfinite(marks).all() and ((quality >= 0) & (quality <= 1)).all()
    assert (marks > -net.side / 2).all() and (marks < 1.5 * net.side).all()
    fits = ln.fits_from_net(grays, [None] * len(grays), net)
    errors = []
    for g, fit in zip(grays, fits):
        d = detect.cut(g)
        if not d.failure:
            errors.append(L.landmark_error(fit.landmarks, d.faces[0].face.landmarks))
    assert len(errors) >= 20 and np.median(errors) < 0.08
    assert np.median(quality) > 0.5  # real faces mostly look right to the error head


def test_net_cutter_gives_low_quality_on_blank_and_refuses_unknown_models() -> None:
    model = L.LandmarkModelFile.default()
    blank = FaceCutter(CutSettings(face_mode="aligned", landmarks="net"), model).cut(np.full((48, 48), 128, np.uint8))
    assert blank.faces and blank.faces[0].face.quality < 0.5
    with pytest.raises(InputError, match="landmarks must be one of"):
        FaceCutter(CutSettings(face_mode="aligned", landmarks="hrnet"), model).cut(np.zeros((48, 48), np.uint8))
    with pytest.raises(InputError):
        PreprocessConfig(landmarks="hrnet")


def test_preprocess_with_the_net_records_it_in_every_shard(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, f in enumerate(_fer_files(6) if FER_TEST.is_dir() else []):
        (src / "happy").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, src / "happy" / f"{i}.jpg")
    if not src.is_dir():
        from tests.test_pipeline import make_source

        make_source(src, per_class=2, bad=False)
    cfg = PreprocessConfig(face="aligned", landmarks="net", shard_size=4)
    summary = run_preprocess(str(src), str(tmp_path / "out"), cfg, PreprocessRun(jobs=1, chunk_size=3), progress=False)
    assert summary.failed == 0 and summary.written_now > 0
    files = sorted((tmp_path / "out").rglob("*.h5"))
    assert files
    for path in files:
        with h5py.File(path, "r") as f:
            assert json.loads(f.attrs["params"])["landmarks"] == "net"
            assert json.loads(f.attrs["landmark_model"])["net"]["file"] == ln.NET_FILE.name
            q = f["quality"][()]
            assert ((q >= 0) & (q <= 1)).all()
    with pytest.raises(Exception, match="landmarks"):  # the same folder cut by dlib is another run
        run_preprocess(str(src), str(tmp_path / "out"), PreprocessConfig(face="aligned", shard_size=4),
                       PreprocessRun(jobs=1), progress=False)


def test_a_crop_gets_the_same_fit_whatever_batch_it_is_in() -> None:
    net = ln.load_landmark_net()
    crops = np.random.default_rng(2).integers(0, 256, (40, net.side, net.side), dtype=np.uint8)
    marks, quality = net.predict(crops)
    for n in (1, 3, 17):
        m, q = net.predict(crops[:n])
        assert (m == marks[:n]).all() and (q == quality[:n]).all()


def test_a_folder_cut_before_the_option_existed_resumes_as_dlib(tmp_path: Path) -> None:
    from tests.test_pipeline import make_source

    make_source(tmp_path / "src", per_class=1, bad=False)
    out = tmp_path / "out"
    cfg = PreprocessConfig(face="aligned")
    run_preprocess(str(tmp_path / "src"), str(out), cfg, PreprocessRun(jobs=1), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["params"]["landmarks"]  # as written before --landmarks
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = run_preprocess(str(tmp_path / "src"), str(out), cfg, PreprocessRun(jobs=1), progress=False)
    assert again.written_now == 0 and again.samples == 3


def test_net_fast_gives_the_networks_own_points_and_its_own_quality(tmp_path: Path) -> None:
    """`--landmarks net-fast`: the network's points as it places them (no refinement), scored by the
    error head learnt for them; `net` refines them on the image. Both record the network file."""
    net = ln.load_landmark_net()
    assert net.card["held_back_fast"]["above_0.10"] > net.card["held_back"]["above_0.10"]
    grays = [_face_crop()]
    crops = np.stack([ln.cut_crop(g, ln.whole_image_box(g), net.side) for g in grays])
    own, _hidden = net.points(crops)
    fast = ln.fits_from_net(grays, [None], net, refined=False)[0]
    assert np.allclose(fast.landmarks, (own[0] + 0.5) * (48 / net.side) - 0.5)
    refined = ln.fits_from_net(grays, [None], net)[0]
    assert np.abs(refined.landmarks - fast.landmarks).max() > 0.05 and 0 <= fast.quality <= 1
    model = L.LandmarkModelFile.default()
    cut = FaceCutter(CutSettings(face_mode="aligned", landmarks="net-fast"), model).cut(grays[0])
    assert np.allclose(cut.faces[0].face.landmarks, fast.landmarks, atol=1e-4)
    src = tmp_path / "src" / "happy"
    src.mkdir(parents=True)
    Image.fromarray(grays[0]).save(src / "a.png")
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), PreprocessConfig(face="aligned", landmarks="net-fast"),
                   PreprocessRun(jobs=1), progress=False)
    (shard,) = sorted((tmp_path / "out").rglob("*.h5"))
    with h5py.File(shard, "r") as f:
        assert json.loads(f.attrs["params"])["landmarks"] == "net-fast"
        assert json.loads(f.attrs["landmark_model"])["net"]["file"] == ln.NET_FILE.name


# ------------------------------------------------------------------------------------------------
# the second look: dlib refits the network's doubtful fits


def _second_look_faces() -> list[np.ndarray]:
    noise = np.random.default_rng(5).integers(0, 256, (48, 48), dtype=np.uint8)
    return [_face_crop(), np.full((48, 48), 128, np.uint8), noise, _face_crop()[:, ::-1].copy()]


def test_quality_of_an_error_is_the_heads_quality_of_that_estimate() -> None:
    net = ln.load_landmark_net()
    rows = np.random.default_rng(0).normal(size=(20, net.head.scale[0].shape[0])).astype(np.float32)
    estimate = np.exp(net.head.log_error(rows))
    assert np.allclose([net.head.quality_of(e) for e in estimate], net.head.quality(rows), atol=1e-6)
    assert net.head.quality_of(0.03) > net.head.quality_of(0.06) > net.head.quality_of(0.2)


def test_second_look_refits_the_doubtful_network_fits_with_dlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit whose estimated error is above SECOND_LOOK_ABOVE becomes dlib's fit from the same box
    (points and quality); the others stay the network's."""
    grays, net = _second_look_faces(), ln.load_landmark_net()
    shape_model = L.LandmarkModelFile.default().load()
    plain = ln.fits_from_net(grays, [None] * len(grays), net)
    dlib = L.fits_from_boxes(grays, [f.box for f in plain], shape_model)
    looked = ln.fits_from_net(grays, [None] * len(grays), net, second_look=shape_model)
    below = net.head.quality_of(ln.SECOND_LOOK_ABOVE)
    assert any(f.quality < below for f in plain)  # the blank and the noise at least
    for p, d, got in zip(plain, dlib, looked):
        want = d if p.quality < below else p
        assert np.array_equal(got.landmarks, want.landmarks) and got.quality == want.quality and got.box == p.box
    monkeypatch.setattr(ln, "SECOND_LOOK_ABOVE", 1.0)  # no estimate is above: the network's fits as they are
    none = ln.fits_from_net(grays, [None] * len(grays), net, second_look=shape_model)
    assert all(np.array_equal(a.landmarks, b.landmarks) and a.quality == b.quality for a, b in zip(none, plain))


def test_the_cutter_gives_the_second_look_to_the_network_and_to_net_fast() -> None:
    model = L.LandmarkModelFile.default()
    blank = np.full((48, 48), 128, np.uint8)
    for landmarks in ("net", "net-fast"):
        cutter = FaceCutter(CutSettings(face_mode="aligned", landmarks=landmarks, second_look=True), model)
        face = cutter.cut(blank).faces[0].face
        plain = ln.fits_from_net([blank], [None], ln.load_landmark_net(), landmarks == "net")[0]
        dlib = L.fits_from_boxes([blank], [plain.box], model.load())[0]
        assert np.allclose(face.landmarks, dlib.landmarks, atol=1e-4) and face.quality == pytest.approx(dlib.quality)
