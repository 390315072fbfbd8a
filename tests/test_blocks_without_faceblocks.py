"""docs/blocks_without_faceblocks.md runs as written: its numpy + OpenCV blocks are within 1 grey
level of `prepro.blocks.cut_blocks`' and its labels from the exported ONNX file are those of
`faceblocks predict` with the shipped fer2013 model (the astronaut photo, FER2013-sized crops)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "blocks_without_faceblocks.md"
DATA = ROOT.parent / "shared" / "data" / "fer2013" / "test"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@contextlib.contextmanager
def _inside(folder: Path):
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The shipped model exported as the doc's fer2013.onnx, and dlib's landmark model under its name."""
    from inference.export_model import export_model
    from prepro.landmarks import LandmarkModelFile

    folder = tmp_path_factory.mktemp("doc")
    export_model("fer2013", folder / "fer2013.onnx")
    (folder / "shape_predictor_68_face_landmarks.dat").symlink_to(LandmarkModelFile.find().path)
    return folder


@pytest.fixture(scope="module")
def doc(folder) -> dict:
    """The doc's first code block run in ``folder``: its names (cut_blocks, classify, meta...)."""
    scope: dict = {}
    with _inside(folder):
        exec(compile(_python_blocks()[0], str(DOC), "exec"), scope)  # noqa: S102 - the project's own doc
    return scope


def _astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def _crops() -> list[np.ndarray]:
    """FER2013-sized 48x48 grey faces: a few of ../shared/data when present, else cut from the
    astronaut (her face, one tilted, one shifted so a block reaches past the border)."""
    files = sorted(DATA.glob("*/*.png"))[::400][:4] if DATA.is_dir() else []
    if files:
        return [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    grey = cv2.cvtColor(_astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    face = grey[20:230, 120:310]
    tilted = cv2.warpAffine(face, cv2.getRotationMatrix2D((95, 105), 12, 1.0), face.shape[::-1],
                            borderMode=cv2.BORDER_REFLECT)
    return [cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in (face, tilted, face[30:, 20:])]


def _images() -> dict[str, np.ndarray]:
    photo = _astronaut_bgr()
    images = {"astronaut": photo, "astronaut x2": cv2.resize(photo, (1024, 1024)),  # heavy downscales
              "astronaut tilted": cv2.warpAffine(photo, cv2.getRotationMatrix2D((220, 130), -20, 1.0), (512, 512))}
    images.update({f"crop {i}": c for i, c in enumerate(_crops())})
    return images


IMAGES = _images()


def _cuts():
    from inference.predict import Classifier
    from prepro.faces import FaceCutter
    from prepro.landmarks import LandmarkModelFile

    cutter = FaceCutter(Classifier("fer2013").cut_settings(), LandmarkModelFile.find())
    for name, image in IMAGES.items():
        cut = cutter.cut(image, all_faces=True, keep_image=True)
        assert cut.faces, (name, cut.failure)
        yield name, cut


def test_blocks_are_within_one_grey_level_of_faceblocks(doc):
    """On faceblocks' grey image and landmarks, every block of the doc's cut_blocks matches
    cut_blocks' to 1 grey level, with the shipped geometry and with others (no rotation, a
    constant border, small blocks: the area pre-reduction of heavy downscales)."""
    from prepro.blocks import BlockConfig, cut_blocks, cutting_geometry

    configs = [BlockConfig(), BlockConfig(rotate=False, pad="constant", eyes_margin=0.6, face_margin=0.5),
               BlockConfig(eyes_size=(8, 20), mouth_size=(6, 12), face_size=(12, 10), mouth_margin=1.0)]
    reduced = 0
    for name, cut in _cuts():
        assert cut.scale == 1.0  # arrays are taken as they are
        for cfg in configs:
            geometry = cutting_geometry(cfg)
            for fc in cut.faces:
                marks = fc.face.landmarks
                theirs = cut_blocks(cut.gray, marks, cfg)
                ours = doc["cut_blocks"](cut.gray, marks, geometry)
                iod = np.hypot(*(marks[42:48].mean(0) - marks[36:42].mean(0)))
                reduced += cfg.face_size[1] / ((1 + 2 * cfg.face_margin) * iod) < 0.5
                for region in ("eyes", "mouth", "face"):
                    a, b = getattr(theirs, region), ours[region]
                    assert b.dtype == np.uint8 and b.shape == a.shape, (name, region)
                    diff = np.abs(a.astype(int) - b.astype(int)).max()
                    assert diff <= 1, (name, cfg, region, diff)
    assert reduced, "no block went through the area pre-reduction"


def test_labels_from_the_onnx_file_are_faceblocks_predicts(doc):
    """The doc's classify (OpenCV's grey, the exported file) on the landmarks `predict` found gives
    predict's label for every face; its probabilities are near predict's."""
    from inference.predict import predict

    # the shipped model averages with the mirror image and the one-pixel shifts
    assert doc["meta"]["tta_flip"] is True and doc["meta"]["tta_shift"] is True
    results = list(predict("fer2013", list(IMAGES.values())))
    labels = set()
    for name, result in zip(IMAGES, results):
        image = IMAGES[name]
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        assert result.faces, (name, result.error)
        for face in result.faces:
            label, probs = doc["classify"](gray, face.landmarks)
            assert label == face.label, (name, label, face.label)
            expected = np.array([face.probabilities[c] for c in doc["meta"]["class_names"]])
            assert np.abs(probs - expected).max() < 0.05, (name, probs, expected)
            labels.add(label)
    assert len(labels) >= 1


def test_the_dlib_loop_prints_predicts_labels_for_a_photo(doc, folder):
    """The doc's second block, as written, on the astronaut saved as photo.jpg: one face, and the
    label `faceblocks predict photo.jpg` gives."""
    from inference.predict import predict

    cv2.imwrite(str(folder / "photo.jpg"), _astronaut_bgr())
    out = io.StringIO()
    with _inside(folder), contextlib.redirect_stdout(out):
        exec(compile(_python_blocks()[1], str(DOC), "exec"), dict(doc))  # noqa: S102 - the project's own doc
    printed = out.getvalue().split("\n")[:-1]
    (result,) = predict("fer2013", [folder / "photo.jpg"])
    assert len(printed) == len(result.faces) == 1, printed
    assert printed[0].split()[-2] == result.faces[0].label, (printed, result.faces[0].label)
