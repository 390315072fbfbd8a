"""`import faceblocks`: the public API under one name, loaded lazily (no torch at import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_cheap():
    code = ("import sys, faceblocks; heavy = [m for m in ('torch', 'cv2', 'dlib', 'h5py', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("name, module", [
    ("preprocess", "prepro"), ("ShardReader", "prepro.shards"), ("FaceCutter", "prepro.faces"),
    ("export_blocks", "prepro.export"), ("predict", "inference.predict"), ("Classifier", "inference.classifier"),
    ("PredictOptions", "inference.predictions"), ("train", "training.train"), ("TrainConfig", "training.config"),
    ("evaluate", "training.evaluate"), ("export_model", "inference.export_model"),
    ("run_chain", "training.chain"), ("create_model", "architectures"), ("FaceblocksError", "prepro.errors"),
    ("predict_table", "inference.dataframe"), ("to_dataframe", "inference.dataframe"),
    ("write_ensemble", "training.ensemble_checkpoint")])
def test_every_public_name_is_the_library_object(name, module):
    import importlib

    import faceblocks

    assert name in faceblocks.__all__ and name in dir(faceblocks)
    assert getattr(faceblocks, name) is getattr(importlib.import_module(module), name)
    from faceblocks import __version__  # noqa: F401 - a plain from-import works too

    assert faceblocks.__version__ == importlib.import_module("prepro").__version__


def test_unknown_names_are_attribute_errors():
    import faceblocks

    with pytest.raises(AttributeError, match="no attribute 'Preprocess'"):
        faceblocks.Preprocess  # noqa: B018
    assert not hasattr(faceblocks, "os")


def test_the_package_is_installed():
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    include = setup.split("[options.packages.find]")[1].split("[")[0]
    assert "faceblocks" in include.split()
