"""The model that ships inside the package: it loads safely, predicts on a real photograph, carries
its card, and its card's PublicTest figure is what it scores (on ../shared/data, when present)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main as cli
from training.zoo import MODELS_DIR, shipped_cards, shipped_names

ROOT = Path(__file__).resolve().parents[1]
FER_TEST = ROOT.parent / "shared" / "data" / "fer2013" / "test"
pytestmark = pytest.mark.skipif("fer2013" not in shipped_names(), reason="no shipped fer2013 model in this tree")


def test_shipped_file_is_small_plain_and_describes_itself():
    path = MODELS_DIR / "fer2013.pt"
    assert path.stat().st_size <= 4 * 1024 * 1024
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain data only: no code can run
    assert ckpt["class_names"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert ckpt["regions"] == ["eyes", "mouth", "face"] and ckpt["preprocessing"]["face"] == "auto"
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    card = ckpt["card"]
    for key in ("title", "data", "recipe", "training", "preprocessing", "terms"):
        assert card[key]
    figures = card["results"]["publictest"]
    assert 0.5 < figures["accuracy"] < 1 and 0.3 < figures["macro_f1"] < 1
    assert set(figures["per_class_f1"]) == set(ckpt["class_names"])
    assert "research" in card["terms"] and "commercial" in card["terms"]


def test_predict_on_a_real_photograph(tmp_path):
    import cv2
    from skimage import data

    from inference.classifier import Classifier
    from inference.predict import PredictOptions, predict

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    (result,) = list(predict("fer2013", [str(photo)], PredictOptions(jobs=1, progress=False)))
    assert result.error is None and len(result.faces) == 1
    face = result.faces[0]
    left, top, right, bottom = face.box
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # her face, not the whole photo
    assert math.isclose(sum(face.probabilities.values()), 1.0, abs_tol=1e-3)
    assert face.label == "happy" and face.probabilities["happy"] > 0.5  # she smiles broadly
    assert set(face.region_weights) == {"eyes", "mouth", "face"}
    classifier = Classifier.load("fer2013", device="cpu")
    assert classifier.class_names[int(np.argmax(list(face.probabilities.values())))] == "happy"


def test_models_command_prints_the_card():
    from architectures import count_params
    from training.checkpoint import build_model_from_checkpoint, load_checkpoint

    n = count_params(build_model_from_checkpoint(load_checkpoint(MODELS_DIR / "fer2013.pt")), trainable_only=False)
    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)["fer2013"]
    geometry = shown.pop("geometry")
    assert shown == {**shipped_cards()["fer2013"], "parameters": n}
    assert geometry["regions"]["mouth"]["size"] == [16, 32] and geometry["regions"]["eyes"]["landmarks"][0] == 17
    r = CliRunner().invoke(cli, ["models"])
    assert r.exit_code == 0 and "fer2013: two-branch-face on FER2013" in r.output and "publictest: accuracy" in r.output
    assert f"{n:,} parameters" in r.output


@pytest.mark.slow
@pytest.mark.skipif(not FER_TEST.is_dir(), reason="needs ../shared/data/fer2013 (FER2013 PublicTest)")
def test_card_figure_is_what_the_model_scores_on_publictest(tmp_path):
    """Preprocess PublicTest as the models' training shards were cut, evaluate each shipped model
    by name, and find its card's accuracy (the stored weights are float16: a few images may change
    their vote)."""
    ckpt = torch.load(MODELS_DIR / "fer2013.pt", map_location="cpu", weights_only=True)
    sizes = ckpt["block_sizes"]
    shards = tmp_path / "publictest"
    args = ["preprocess", str(FER_TEST), str(shards), "--dataset", "fer2013", "--face", "aligned", "-q",
            "--eyes-size", "x".join(map(str, sizes["eyes"])), "--mouth-size", "x".join(map(str, sizes["mouth"])),
            "--face-size", "x".join(map(str, sizes["face"]))]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    for name in shipped_names():  # every shipped model is cut like fer2013 (the ensemble's members too)
        out = tmp_path / f"ev-{name}"
        r = CliRunner().invoke(cli, ["evaluate", name, str(shards), "--split", "val", "--out", str(out)])
        assert r.exit_code == 0, r.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n_samples"] == 3589
        assert abs(metrics["accuracy"] - shipped_cards()[name]["results"]["publictest"]["accuracy"]) < 0.003, name


def test_card_json_is_the_checkpoints_card():
    """`faceblocks models` and `--version` read the card's JSON copy (no torch): it must be the same."""
    from prepro.outputs import sha256_file
    from training.zoo import card_path, checkpoint_geometry, parameter_count

    for name in shipped_names():
        copy = json.loads(card_path(name).read_text())
        ckpt = torch.load(MODELS_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
        assert copy["card"] == ckpt["card"] and copy["weights_sha256"] == sha256_file(MODELS_DIR / f"{name}.pt")
        assert copy["parameters"] == parameter_count(ckpt)
        assert copy["geometry"] == checkpoint_geometry(ckpt)
        assert copy["geometry"]["regions"]["eyes"]["size"] == list(ckpt["block_sizes"]["eyes"])
    # both paid on the holdout (BENCHMARKS.md: benchmarks/choose_tta.py)
    card = shipped_cards()["fer2013"]
    assert card["tta_flip"] is True and card["tta_shift"] is True
