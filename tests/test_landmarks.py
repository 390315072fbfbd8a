"""prepro.landmarks and prepro.faces: the landmark model file, regions, box methods, coordinates,
quality, and images that hold no face (a failure with a reason, never an exception)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prepro import landmarks as L
from prepro.errors import DataError, InputError
from prepro.faces import BOX_METHODS, CutSettings, FaceCutter, ImageCut
from prepro.landmark_models import face_evidence, load_mean_shape, procrustes_rms
from prepro.landmarks import LandmarkModelFile

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def model_file() -> LandmarkModelFile:
    return LandmarkModelFile.default()


def cutter(model_file: LandmarkModelFile, face_mode: str = "auto", **kw) -> FaceCutter:
    return FaceCutter(CutSettings(face_mode=face_mode, **kw), model_file)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import cv2
    from skimage import data

    return np.ascontiguousarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY))


@pytest.fixture(scope="module")
def astronaut_cut(model_file: LandmarkModelFile, astronaut: np.ndarray) -> ImageCut:
    return cutter(model_file, "detect").cut(astronaut, all_faces=True)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


# ------------------------------------------------------------------------------------------------
# the landmark model file


def test_landmark_model_in_package(model_file: LandmarkModelFile) -> None:
    assert model_file.path.name == "shape_predictor_68_face_landmarks.dat" and model_file.path.is_file()
    assert LandmarkModelFile.find(str(model_file.path)) == model_file == LandmarkModelFile.find(None)


def test_landmark_model_explicit_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--landmark-model") as ei:
        LandmarkModelFile.find(tmp_path / "missing.dat")
    assert "missing.dat" in str(ei.value)


def test_a_file_that_is_no_landmark_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"not a dlib model at all")
    with pytest.raises(DataError, match="not a dlib landmark model"):
        LandmarkModelFile.find(junk).load()


def test_sha256_file(tmp_path: Path) -> None:
    from prepro.outputs import sha256_file

    p = tmp_path / "x"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_regions_cover_all_points_once() -> None:
    covered = np.concatenate([np.arange(68)[s] for s in L.REGIONS.values()])
    assert sorted(covered.tolist()) == list(range(68))
    assert L.EYES_BLOCK_IDX.tolist() == list(range(17, 27)) + list(range(36, 48))
    assert L.MOUTH_BLOCK_IDX.tolist() == list(range(48, 68))
    assert L.REGIONS["left_eye"] == slice(42, 48) and L.JAW == slice(0, 17)


def test_import_is_light() -> None:
    code = ("import sys, prepro.landmarks, prepro.blocks, prepro.image_io, prepro.faces, prepro.config, "
            "prepro.landmark_models; print(sorted(m for m in ('dlib', 'cv2', 'PIL', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# finding faces


def test_invalid_mode_lists_modes(model_file: LandmarkModelFile) -> None:
    with pytest.raises(InputError, match="auto, detect, aligned"):
        cutter(model_file, "haar")


def test_astronaut_detected(astronaut_cut: ImageCut) -> None:
    assert astronaut_cut.failure is None and len(astronaut_cut.faces) == 1
    f = astronaut_cut.faces[0].face
    assert f.method == "hog" and f.method in BOX_METHODS and f.det_score > 0
    assert f.landmarks.dtype == np.float32 and f.landmarks.shape == (68, 2)
    left, top, right, bottom = f.box
    assert 0 <= left < right <= 512 and 0 <= top < bottom <= 512
    lm = f.landmarks
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y < lm[30, 1] < lm[48:68, 1].mean()  # eyes above nose tip above mouth
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # subject's right eye on the image left
    inner = lm[17:68]  # the jaw may leave the detector box; the inner face must not
    assert (inner[:, 0] > left - 2).all() and (inner[:, 0] < right + 2).all()
    assert (inner[:, 1] > top - 10).all() and (inner[:, 1] < bottom + 2).all()
    assert 0.7 < f.quality <= 1.0
    assert astronaut_cut.size == (512, 512) and astronaut_cut.scale == 1.0


def test_large_canvas_original_coordinates(tmp_path: Path, model_file: LandmarkModelFile,
                                           astronaut: np.ndarray, astronaut_cut: ImageCut) -> None:
    import cv2

    canvas = np.full((3000, 3000), 90, np.uint8)
    canvas[700:700 + 1536, 1000:1000 + 1536] = cv2.resize(astronaut, (1536, 1536),
                                                          interpolation=cv2.INTER_CUBIC)
    p = tmp_path / "canvas.jpg"
    cv2.imwrite(str(p), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cut = cutter(model_file, "detect", work_max_side=1024).cut(p)
    assert cut.failure is None and cut.scale == 0.5 and cut.size == (3000, 3000)  # decoded reduced
    f = cut.faces[0].face
    # A 3x upscale maps pixel centre x to 3x + 1; then the canvas offset.
    expected = astronaut_cut.faces[0].face.landmarks * 3 + 1 + np.array([1000, 700])
    iod = _iod(expected)
    err = np.linalg.norm(f.landmarks - expected, axis=1)
    assert err.mean() < 0.04 * iod and err.max() < 0.12 * iod
    left, top, right, bottom = f.box
    assert 1000 < left < right < 2536 and 700 < top < bottom < 2236
    assert f.quality > 0.7


def test_aligned_crop_starts_from_the_estimated_box(model_file: LandmarkModelFile, astronaut: np.ndarray,
                                                    astronaut_cut: ImageCut) -> None:
    import cv2

    l, t, r, b = (int(v) for v in astronaut_cut.faces[0].face.box)
    crop = cv2.resize(astronaut[t:b, l:r], (48, 48), interpolation=cv2.INTER_AREA)
    cut = cutter(model_file, "aligned").cut(crop)
    f = cut.faces[0].face
    assert cut.failure is None and f.method == "estimated" and math.isnan(f.det_score)
    assert all(0.0 <= v <= 48.0 for v in f.box) and f.box[0] < f.box[2] and f.box[1] < f.box[3]
    assert f.quality > 0.5
    # Landmarks where the detector's would be: eyes in the upper half, mouth in the lower.
    assert f.landmarks[36:48, 1].mean() < 24 < f.landmarks[48:68, 1].mean()


def test_given_box_is_used_as_it_is(model_file: LandmarkModelFile, astronaut: np.ndarray,
                                    astronaut_cut: ImageCut) -> None:
    box = astronaut_cut.faces[0].face.box
    cut = cutter(model_file, "detect").cut(astronaut, box=box)
    f = cut.faces[0].face
    assert f.method == "given" and f.box == box and math.isnan(f.det_score)
    np.testing.assert_allclose(f.landmarks, astronaut_cut.faces[0].face.landmarks, atol=1e-4)


def test_auto_blank_small_falls_back_with_low_quality(model_file: LandmarkModelFile) -> None:
    cut = cutter(model_file).cut(np.full((48, 48), 128, np.uint8))
    assert cut.failure is None and cut.faces[0].face.method == "estimated_fallback"
    assert cut.faces[0].face.quality < 0.05


def test_auto_large_blank_without_precropped_is_a_failure(model_file: LandmarkModelFile) -> None:
    blank = np.full((300, 400), 128, np.uint8)
    cut = cutter(model_file).cut(blank)
    assert not cut.faces and "no face found" in cut.failure and "400x300" in cut.failure
    cut = cutter(model_file, pre_cropped=True).cut(blank)
    assert cut.faces[0].face.method == "estimated_fallback" and cut.faces[0].face.quality < 0.05


def test_detect_blank_is_a_failure(model_file: LandmarkModelFile) -> None:
    cut = cutter(model_file, "detect").cut(np.full((480, 640), 128, np.uint8))
    assert cut.failure == "no face found by the hog detector (image 640x480)" and not cut.faces
    cut = cutter(model_file, "detect").cut(np.zeros((480, 640), np.uint8), all_faces=True)
    assert cut.faces == [] and cut.failure


@pytest.mark.parametrize("array, why", [
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((3, 200), np.uint8), "too small"),
    (np.zeros((0, 0), np.uint8), "HxW grey"),
    (np.zeros((0, 5), np.uint8), "HxW grey"),
    (np.zeros((4, 4, 2), np.uint8), "HxW grey"),
    (np.zeros((4, 4, 3), np.uint8), "too small"),  # a BGR frame, read as grey
    (np.zeros((0, 4, 3), np.uint8), "HxW grey"),
    (np.zeros((48, 48), np.float32), "uint8"),
])
def test_tiny_empty_and_wrong_arrays_are_failures(model_file: LandmarkModelFile, array, why) -> None:
    for mode in ("auto", "detect", "aligned"):
        cut = cutter(model_file, mode).cut(array, keep_image=True)
        assert cut.faces == [] and why in cut.failure


def test_one_pixel_image_file_is_a_failure(model_file: LandmarkModelFile, tmp_path: Path) -> None:
    from PIL import Image

    p = tmp_path / "dot.png"
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(p)
    for mode in ("auto", "detect", "aligned"):
        cut = cutter(model_file, mode).cut(p)
        assert cut.faces == [] and "1x1 pixels is too small" in cut.failure and cut.size == (1, 1)
    missing = cutter(model_file).cut(tmp_path / "gone.png")
    assert missing.faces == [] and "unreadable" in missing.failure


def test_pickles_without_dlib_objects(model_file: LandmarkModelFile, astronaut: np.ndarray) -> None:
    c = cutter(model_file, "aligned")
    c.cut(astronaut[100:300, 150:350].copy())  # loads dlib objects
    blob = pickle.dumps(c)
    assert len(blob) < 2000
    c2 = pickle.loads(blob)
    assert c2.settings == c.settings and c2.landmark_model == model_file
    assert c2.cut(np.full((48, 48), 100, np.uint8)).faces[0].face.method == "estimated"


# ------------------------------------------------------------------------------------------------
# shape and quality


def test_procrustes_invariant_to_similarity() -> None:
    m = load_mean_shape()
    assert abs(_iod(m) - 1.0) < 1e-3
    a = math.radians(25)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = m @ rot.T * 37.0 + [120, 80]
    assert procrustes_rms(moved) < 1e-3
    assert procrustes_rms(np.zeros((68, 2))) == math.inf
    noisy = moved + np.random.default_rng(0).normal(0, 0.3 * 37.0, moved.shape)
    assert procrustes_rms(noisy) > 0.2


def test_quality_low_on_blank_even_for_a_perfect_shape(model_file: LandmarkModelFile) -> None:
    from prepro.landmark_models import load_landmark_models, quality_from_signs, quality_signs

    blank = np.full((48, 48), 77, np.uint8)
    shape = load_mean_shape() * 17 + 24
    assert abs(face_evidence(blank, shape)) < 1e-9
    models = load_landmark_models()
    q = quality_from_signs(quality_signs(blank, shape, (8.0, 8.0, 40.0, 40.0), models), models)
    assert 0.0 <= q < 0.05
    fit = L.fit_from_box(blank, (8.0, 8.0, 40.0, 40.0), model_file.load())
    assert fit.quality < 0.05 and fit.landmarks.shape == (68, 2)


@pytest.mark.skipif(not (SHARED_DATA / "fer2013" / "train").is_dir(), reason="no shared FER2013 data")
def test_real_fer2013_files(model_file: LandmarkModelFile) -> None:
    files = sorted((SHARED_DATA / "fer2013" / "train" / "happy").glob("*.jpg"))[:40]
    results = [cutter(model_file, pre_cropped=True).cut(f) for f in files]
    assert all(r.failure is None for r in results)
    faces = [r.faces[0].face for r in results]
    assert {f.method for f in faces} <= {"hog", "estimated_fallback"}
    assert sum(f.method == "hog" for f in faces) >= 20
    assert np.median([f.quality for f in faces]) > 0.6
    aligned = [cutter(model_file, "aligned").cut(f).faces[0].face for f in files]
    assert {f.method for f in aligned} == {"estimated"} and np.median([f.quality for f in aligned]) > 0.6


def test_second_look_recovers_a_collapsed_first_fit(model_file: LandmarkModelFile, astronaut: np.ndarray,
                                                    astronaut_cut: ImageCut, monkeypatch) -> None:
    """A real face crop whose first fit starts from a wrong box (a corner of the crop) and
    collapses: the quality says so, and the second look's other starts bring the landmarks back."""
    import cv2

    from prepro import landmark_models

    l, t, r, b = (int(v) for v in astronaut_cut.faces[0].face.box)
    crop = cv2.resize(astronaut[t:b, l:r], (48, 48), interpolation=cv2.INTER_AREA)
    shape_model = model_file.load()
    good = L.fit_crop(crop, shape_model)
    monkeypatch.setattr(landmark_models, "estimate_start_boxes",
                        lambda grays, models: np.array([(0.0, 0.0, 14.0, 14.0)] * len(grays)))
    collapsed = L.fit_crop(crop, shape_model, second_look=False)
    looked_again = L.fit_crop(crop, shape_model, second_look=True)
    assert collapsed.quality < L.SECOND_LOOK_BELOW and L.landmark_error(collapsed.landmarks, good.landmarks) > 0.5
    assert looked_again.quality > 0.5 and L.landmark_error(looked_again.landmarks, good.landmarks) < 0.15


@pytest.mark.skipif(not (SHARED_DATA / "fer2013" / "test").is_dir(), reason="no shared FER2013 data")
def test_aligned_agrees_with_the_detector_on_real_fer2013_faces(model_file: LandmarkModelFile) -> None:
    """The landmark benchmark in small: on every 18th PublicTest face (about 200), the detector-free
    landmarks against the detector-box ones (BENCHMARKS.md: 4.9% above 0.10, 1.8% above 0.20 on
    all 3,589), and quality below 0.5 on few faces (7.2% on all)."""
    files = sorted((SHARED_DATA / "fer2013" / "test").glob("*/PublicTest_*.jpg"))[::18]
    detect, aligned = cutter(model_file, "detect"), cutter(model_file, "aligned")
    errors, qualities = [], []
    for f in files:
        a = aligned.cut(f).faces[0].face
        qualities.append(a.quality)
        d = detect.cut(f)
        if d.faces:
            errors.append(L.landmark_error(a.landmarks, d.faces[0].face.landmarks))
    errors = np.array(errors)
    assert len(files) >= 190 and len(errors) >= 0.7 * len(files)  # HOG finds about 80% of them
    assert np.median(errors) < 0.04 and (errors > 0.10).mean() < 0.10 and (errors > 0.20).mean() < 0.05
    assert (np.array(qualities) < 0.5).mean() < 0.12


def test_auto_trust_keeps_good_crop_fits_and_detects_only_the_doubtful(model_file: LandmarkModelFile,
                                                                       astronaut: np.ndarray,
                                                                       astronaut_cut: ImageCut, monkeypatch) -> None:
    """--auto-trust: a crop whose own fit reaches the quality is kept as the aligned path fits it,
    without the detector; a doubtful one gets the detector's box (or the fallback), as plain auto."""
    import cv2

    import prepro.faces as faces

    l, t, r, b = (int(v) for v in astronaut_cut.faces[0].face.box)
    pad = (r - l) // 4
    crop = cv2.resize(astronaut[t - pad:b + pad, l - pad:r + pad], (96, 96), interpolation=cv2.INTER_AREA)
    blank = np.full((48, 48), 128, np.uint8)
    aligned = cutter(model_file, "aligned").cut_many([crop, blank])
    plain = cutter(model_file).cut_many([crop, blank])
    assert plain[0].faces[0].face.method == "hog" and plain[1].faces[0].face.method == "estimated_fallback"
    calls = []
    real = faces.detect_faces
    monkeypatch.setattr(faces, "detect_faces", lambda *a, **k: calls.append(1) or real(*a, **k))
    trusted = cutter(model_file, auto_trust=0.5).cut_many([crop, blank])
    assert len(calls) == 1  # the blank crop only
    assert trusted[0].faces[0].face.method == "estimated" and trusted[1].faces[0].face.method == "estimated_fallback"
    for got, want in zip(trusted, aligned):
        np.testing.assert_array_equal(got.faces[0].face.landmarks, want.faces[0].face.landmarks)
    doubted = cutter(model_file, auto_trust=1.0).cut_many([crop, blank])
    for got, want in zip(doubted, plain):
        assert got.faces[0].face.method == want.faces[0].face.method
        np.testing.assert_array_equal(got.faces[0].face.landmarks, want.faces[0].face.landmarks)
    calls.clear()
    every = cutter(model_file, auto_trust=0.0).cut(crop, all_faces=True)  # every face: the detector decides
    assert calls and every.faces[0].face.method == "hog"
