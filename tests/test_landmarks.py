"""prepro.landmarks: predictor lookup, regions, detection modes, coordinates, quality."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prepro import landmarks as L
from prepro.landmarks import (BOX_METHODS, FaceModel, NoFaceError, PredictorNotFoundError,
                              find_predictor, landmark_quality, load_mean_shape, procrustes_rms)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def predictor_path() -> Path:
    return find_predictor(None)


@pytest.fixture(scope="module")
def detect_model(predictor_path: Path) -> FaceModel:
    return FaceModel(predictor_path, face_mode="detect")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import cv2
    from skimage import data

    return np.ascontiguousarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY))


@pytest.fixture(scope="module")
def astronaut_face(detect_model: FaceModel, astronaut: np.ndarray) -> L.FaceResult:
    return detect_model.find(astronaut)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def test_find_predictor_in_package(predictor_path: Path) -> None:
    assert predictor_path.name == "shape_predictor_68_face_landmarks.dat" and predictor_path.is_file()
    assert find_predictor(str(predictor_path)) == predictor_path


def test_find_predictor_explicit_missing(tmp_path: Path) -> None:
    with pytest.raises(PredictorNotFoundError) as ei:
        find_predictor(tmp_path / "missing.dat")
    assert isinstance(ei.value, FileNotFoundError)
    assert "--predictor PATH" in str(ei.value) and "face_recognition_models" in str(ei.value)


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"abc")
    from prepro.shards import sha256_file

    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_regions_cover_all_points_once() -> None:
    covered = np.concatenate([np.arange(68)[s] for s in L.REGIONS.values()])
    assert sorted(covered.tolist()) == list(range(68))
    assert L.EYES_BLOCK_IDX.tolist() == list(range(17, 27)) + list(range(36, 48))
    assert L.MOUTH_BLOCK_IDX.tolist() == list(range(48, 68))
    assert L.REGIONS["left_eye"] == slice(42, 48) and L.JAW == slice(0, 17)


def test_import_is_light() -> None:
    code = ("import sys, prepro.landmarks, prepro.blocks, prepro.image_io; "
            "print(sorted(m for m in ('dlib', 'cv2', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_invalid_mode_lists_modes(predictor_path: Path) -> None:
    with pytest.raises(ValueError, match="auto, detect, aligned"):
        FaceModel(predictor_path, face_mode="haar")


def test_astronaut_detected(astronaut_face: L.FaceResult, detect_model: FaceModel,
                            astronaut: np.ndarray) -> None:
    f = astronaut_face
    assert f.method == "detector" and f.method in BOX_METHODS and f.det_score > 0
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
    assert f.quality > 0.7
    assert len(detect_model.find_all(astronaut)) == 1


def test_large_canvas_original_coordinates(tmp_path: Path, detect_model: FaceModel,
                                           astronaut: np.ndarray, astronaut_face: L.FaceResult) -> None:
    import cv2

    from prepro.image_io import read_gray

    canvas = np.full((3000, 3000), 90, np.uint8)
    canvas[700:700 + 1536, 1000:1000 + 1536] = cv2.resize(astronaut, (1536, 1536),
                                                          interpolation=cv2.INTER_CUBIC)
    p = tmp_path / "canvas.jpg"
    cv2.imwrite(str(p), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    gray, scale = read_gray(p, work_max_side=1024)
    assert scale == 0.5
    f = detect_model.find(gray, scale)
    # A 3x upscale maps pixel centre x to 3x + 1; then the canvas offset.
    expected = astronaut_face.landmarks * 3 + 1 + np.array([1000, 700])
    iod = _iod(expected)
    err = np.linalg.norm(f.landmarks - expected, axis=1)
    assert err.mean() < 0.04 * iod and err.max() < 0.12 * iod
    left, top, right, bottom = f.box
    assert 1000 < left < right < 2536 and 700 < top < bottom < 2236
    assert f.quality > 0.7


def test_aligned_whole_image(predictor_path: Path, astronaut: np.ndarray,
                             astronaut_face: L.FaceResult) -> None:
    import cv2

    l, t, r, b = (int(v) for v in astronaut_face.box)
    crop = cv2.resize(astronaut[t:b, l:r], (48, 48), interpolation=cv2.INTER_AREA)
    f = FaceModel(predictor_path, face_mode="aligned").find(crop)
    assert f.method == "whole_image" and f.box == (0.0, 0.0, 48.0, 48.0) and math.isnan(f.det_score)
    assert f.quality > 0.5


def test_auto_blank_small_falls_back_with_low_quality(predictor_path: Path) -> None:
    f = FaceModel(predictor_path).find(np.full((48, 48), 128, np.uint8))
    assert f.method == "whole_image_fallback" and f.quality < 0.05


def test_auto_large_blank_without_precropped_raises(predictor_path: Path) -> None:
    blank = np.full((300, 400), 128, np.uint8)
    with pytest.raises(NoFaceError, match="400x300"):
        FaceModel(predictor_path, face_mode="auto").find(blank)
    f = FaceModel(predictor_path, face_mode="auto", pre_cropped=True).find(blank)
    assert f.method == "whole_image_fallback"


def test_detect_blank_raises(detect_model: FaceModel) -> None:
    with pytest.raises(NoFaceError, match=r"no face found by the detector \(image 640x480\)"):
        detect_model.find(np.full((480, 640), 128, np.uint8))
    assert detect_model.find_all(np.zeros((480, 640), np.uint8)) == []


def test_rejects_bad_arrays(detect_model: FaceModel) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detect_model.find(np.zeros((48, 48), np.float32))


def test_pickles_without_dlib_objects(predictor_path: Path, astronaut: np.ndarray) -> None:
    m = FaceModel(predictor_path, face_mode="aligned")
    m.find(astronaut[100:300, 150:350].copy())  # loads dlib objects
    blob = pickle.dumps(m)
    assert len(blob) < 1000
    m2 = pickle.loads(blob)
    assert m2._predictor is None and m2._detector is None and m2.face_mode == "aligned"
    assert m2.find(np.full((48, 48), 100, np.uint8)).method == "whole_image"


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


def test_quality_zero_on_blank_even_for_a_perfect_shape() -> None:
    shape = load_mean_shape() * 17 + 24
    assert landmark_quality(shape, np.full((48, 48), 77, np.uint8)) == 0.0


@pytest.mark.skipif(not (SHARED_DATA / "fer2013" / "train").is_dir(), reason="no shared FER2013 data")
def test_real_fer2013_files(predictor_path: Path) -> None:
    from prepro.image_io import read_gray

    files = sorted((SHARED_DATA / "fer2013" / "train" / "happy").glob("*.jpg"))[:40]
    model = FaceModel(predictor_path, face_mode="auto", pre_cropped=True)
    results = [model.find(*read_gray(f)) for f in files]
    assert {r.method for r in results} <= {"detector", "whole_image_fallback"}
    assert sum(r.method == "detector" for r in results) >= 20
    assert np.median([r.quality for r in results]) > 0.6
