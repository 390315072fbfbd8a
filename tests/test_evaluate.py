"""evaluate: where its files go (never inside the installed package) and several splits at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from shardfakes import make_fake_shards

from cli import main
from prepro.errors import InputError, OutputError
from training.config import TrainConfig
from training.evaluate import evaluate
from training.train import train

PER_SPLIT = {"train": 6, "val": 3, "test": 2}  # per class, three classes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shards, a one-epoch run on them and that run shipped as 'tiny' into a stand-in models folder."""
    root = tmp_path_factory.mktemp("evaluate")
    shards = make_fake_shards(root / "data" / "jaffe", per_class=PER_SPLIT)
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, model_kwargs={"widths": [4, 8], "feat_dim": 8})
    train(shards, root / "run", cfg, log=None)
    return root, shards


@pytest.fixture
def shipped(world, monkeypatch):
    import training.zoo as zoo

    root, _ = world
    models = root / "package" / "training" / "models"
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    if not (models / "tiny.pt").is_file():
        zoo.ship(root / "run" / "best.pt", "tiny", {"title": "tiny", "terms": "none"}, models_dir=models)
    return models


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_shipped_model_writes_beside_the_shards_never_into_the_package(world, shipped):
    _, shards = world
    before = _files(shipped)
    m = evaluate("tiny", shards, split="test")
    out = shards.parent / "jaffe-eval-tiny-test"
    assert _files(shipped) == before
    assert {"metrics.json", "confusion.json", "confusion.png"} <= _files(out)
    assert m["files"]["metrics.json"] == str(out / "metrics.json")
    # The shipped file named by its path is the same model: the same place.
    evaluate(shipped / "tiny.pt", shards, split="val")
    assert (shards.parent / "jaffe-eval-tiny-val" / "metrics.json").is_file() and _files(shipped) == before


def test_an_out_folder_inside_the_package_is_refused(world, shipped):
    import prepro
    import training

    _, shards = world
    for inside in (shipped, Path(training.__file__).parent / "eval", Path(prepro.__file__).parent):
        with pytest.raises(OutputError, match="inside the installed faceblocks package"):
            evaluate("tiny", shards, split="test", out_dir=inside)
        assert not (inside / "metrics.json").exists()


def test_a_run_folder_still_gets_its_own_metrics(world):
    root, shards = world
    evaluate(root / "run", shards, split="val")
    assert json.loads((root / "run" / "metrics.json").read_text())["split"] == "val"


def test_several_splits_and_all_are_scored_together(world, tmp_path):
    root, shards = world
    both = evaluate(root / "run", shards, split="val,test", out_dir=tmp_path / "vt")
    assert both["n_samples"] == 3 * (PER_SPLIT["val"] + PER_SPLIT["test"])
    assert both["splits"] == ["val", "test"] and both["split"] == "val+test"
    every = evaluate(root / "run", shards, split="all", out_dir=tmp_path / "all")
    assert every["n_samples"] == 3 * sum(PER_SPLIT.values()) and every["splits"] == ["train", "val", "test"]
    assert sum(sum(row) for row in json.loads((tmp_path / "all" / "confusion.json").read_text())["matrix"]) == 33
    listed = evaluate(root / "run", shards, split=["test", "val"], out_dir=tmp_path / "list")
    assert listed["n_samples"] == both["n_samples"]
    for bad, why in (("tset", "unknown split 'tset'"), ("val,val", "named twice"), ("", "no split")):
        with pytest.raises(InputError, match=why):
            evaluate(root / "run", shards, split=bad, out_dir=tmp_path / "bad")


def test_cli_says_where_the_files_went_and_takes_split_lists(world, shipped):
    _, shards = world
    r = CliRunner().invoke(main, ["evaluate", "tiny", str(shards), "--split", "all"])
    assert r.exit_code == 0, r.output
    out = shards.parent / "jaffe-eval-tiny-all"
    assert f"metrics.json, confusion.json and confusion.png in {out}" in r.output
    assert "[all]" in r.output and (out / "metrics.json").is_file()
    r = CliRunner().invoke(main, ["evaluate", "tiny", str(shards), "--split", "val,test", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["splits"] == ["val", "test"]
    r = CliRunner().invoke(main, ["evaluate", "tiny", str(shards), "--split", "everything"])
    assert r.exit_code == 1 and "unknown split 'everything'" in r.output and "Traceback" not in r.output
