"""Ensembles (`architectures.ensemble`, `training.ensemble_checkpoint`, `faceblocks ensemble`) on
tiny synthetic shard folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from shardfakes import make_fake_shards
from tinyruns import tiny_config

from architectures import create_model
from cli import main
from prepro.errors import InputError, OutputError
from training.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import SplitSamples
from training.ensemble_checkpoint import combine_checkpoints, write_ensemble
from training.evaluate import evaluate
from training.teachers import teacher_probabilities
from training.train import train

TINY = {"widths": [8, 16], "feat_dim": 16, "context_widths": [8, 16]}  # two-branch-face's too


def cfg(**kw) -> TrainConfig:
    return tiny_config(**{"epochs": 2, "lr": 3e-3, "model_kwargs": TINY, "holdout_seed": 0, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_fake_shards(tmp_path_factory.mktemp("d") / "shards")


@pytest.fixture(scope="module")
def members(shards, tmp_path_factory) -> list[Path]:
    """Two runs of different networks and seeds that share their holdout."""
    root = tmp_path_factory.mktemp("runs")
    train(shards, root / "a", cfg(model="two-branch", seed=1), log=None)
    train(shards, root / "b", cfg(model="two-branch-face", seed=2), log=None)
    return [root / "a", root / "b"]


def _blocks(n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {r: torch.randn(n, 1, *hw, generator=g) for r, hw in
            {"eyes": (16, 48), "mouth": (16, 32), "face": (32, 32)}.items()}


def test_ensemble_averages_its_members_probabilities(members, tmp_path):
    out = write_ensemble([str(m) for m in members], tmp_path / "both.pt")
    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == "ensemble" and ckpt["regions"] == ["eyes", "mouth", "face"]
    assert [m["arch"] for m in ckpt["card"]["members"]] == ["two-branch", "two-branch-face"]
    together = build_model_from_checkpoint(ckpt)
    alone = [build_model_from_checkpoint(load_checkpoint(m / "best.pt")) for m in members]
    x = _blocks()
    with torch.no_grad():
        got = together(x)
        outs = [m({r: x[r] for r in m.regions}) for m in alone]
    expected = torch.stack([o.logits.softmax(1) for o in outs]).mean(0)
    assert torch.allclose(got.logits.softmax(1), expected, atol=1e-6)
    # region weights: the two-branch member reads no face, so its weight there counts as 0
    face = outs[1].region_weights[:, 2] / 2
    assert torch.allclose(got.region_weights[:, 2], face, atol=1e-6)
    assert torch.allclose(got.region_weights.sum(1), torch.ones(5), atol=1e-5)


def test_ensemble_evaluates_and_teaches_as_its_members_together(members, shards, tmp_path):
    out = write_ensemble([str(m) for m in members], tmp_path / "both.pt")
    metrics = evaluate(out, shards, split="val", tta_flip=False, tta_shift=False, out_dir=tmp_path / "ev")
    assert 0 <= metrics["accuracy"] <= 1
    samples = SplitSamples(str(shards), "val", regions=("eyes", "mouth", "face"))
    joined, _ = teacher_probabilities([str(out)], str(shards), samples, torch.device("cpu"))
    each, _ = teacher_probabilities([str(m) for m in members], str(shards), samples, torch.device("cpu"))
    assert np.allclose(joined, each, atol=1e-5)  # several teachers are averaged the same way


def test_an_ensemble_trains_from_scratch_and_refuses_fine_tuning(members, shards, tmp_path):
    run = tmp_path / "joint"
    train(shards, run, cfg(model="ensemble", epochs=1), log=None)
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["arch"] == "ensemble" and len(ckpt["model_kwargs"]) == 3  # shared arguments, default members
    out = write_ensemble([str(m) for m in members], tmp_path / "both.pt")
    with pytest.raises(InputError, match="is an ensemble: fine-tune each of its members"):
        train(shards, tmp_path / "ft", cfg(init=str(out)), log=None)


@pytest.mark.parametrize("members_arg, message", [
    ([{"arch": "two-branch"}], "at least two"),
    ([{"arch": "ensemble"}, {"arch": "two-branch"}], "single networks"),
    ([{"arch": "no-such-net"}, {"arch": "two-branch"}], "unknown model 'no-such-net'"),
    ([{"arch": "two-branch", "extra": 1}, {"arch": "two-branch"}], "must be a table with arch"),
    ([{"arch": "two-branch", "model_kwargs": {"widths": -1}}, {"arch": "two-branch"}], "'two-branch'"),
    ("two-branch", "at least two"),
    ([{"arch": "face-cnn"}] * 17, "at most 16"),
])
def test_bad_members_are_one_input_error(members_arg, message):
    with pytest.raises(InputError, match=message):
        create_model("ensemble", 3, members=members_arg)


def _changed(member: Path, path: Path, change) -> Path:
    ckpt = load_checkpoint(member / "best.pt")
    change(ckpt)
    save_checkpoint(ckpt, path)
    return path


@pytest.mark.parametrize("what, change", [
    ("class names", lambda ck: ck["class_names"].reverse()),
    ("normalisation", lambda ck: ck["normalization"].update(mean=0.4)),
    ("block sizes", lambda ck: ck["block_sizes"].update(eyes=[20, 60])),
    ("block cutting", lambda ck: ck["preprocessing"]["blocks"].update(eyes_margin=0.3)),
    ("holdout", lambda ck: ck["config"].update(holdout_seed=5)),
])
def test_members_that_disagree_are_refused(members, tmp_path, what, change):
    other = _changed(members[1], tmp_path / "other.pt", change)
    with pytest.raises(InputError, match=f"differ in their {what}"):
        combine_checkpoints([str(members[0]), str(other)])


def test_a_final_fit_member_leaves_the_ensemble_no_holdout(members, tmp_path):
    """A member trained on every face (val_split none) may join runs with a holdout; the ensemble
    then has no holdout either, so no figure claims to be measured on faces none of them saw."""
    final = _changed(members[1], tmp_path / "final.pt", lambda ck: ck["config"].update(val_split="none"))
    for order in ([members[0], final], [final, members[0]]):
        config = combine_checkpoints([str(m) for m in order])["config"]
        assert config["val_split"] == "none", order
    assert combine_checkpoints([str(m) for m in members])["config"]["val_split"] == "holdout"


def test_members_must_be_two_different_single_models(members, tmp_path):
    with pytest.raises(InputError, match="at least two"):
        combine_checkpoints([str(members[0])])
    with pytest.raises(InputError, match="named twice"):
        combine_checkpoints([str(members[0]), str(members[0] / "best.pt")])
    both = write_ensemble([str(m) for m in members], tmp_path / "both.pt")
    with pytest.raises(InputError, match="itself an ensemble"):
        combine_checkpoints([str(members[0]), str(both)])


def test_output_file_refusals(members, tmp_path):
    refs = [str(m) for m in members]
    with pytest.raises(OutputError, match="is a folder"):
        write_ensemble(refs, tmp_path)
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        write_ensemble(refs, kept)
    assert kept.read_bytes() == b"keep me"
    write_ensemble(refs, kept, overwrite=True)
    assert load_checkpoint(kept)["arch"] == "ensemble"
    before = (members[0] / "best.pt").read_bytes()
    with pytest.raises(OutputError, match="is one of the members"):
        write_ensemble(refs, members[0] / "best.pt", overwrite=True)
    assert (members[0] / "best.pt").read_bytes() == before
    import training

    with pytest.raises(OutputError, match="faceblocks' own folders"):
        write_ensemble(refs, Path(training.__file__).parent / "models" / "mine.pt")


def test_cli_writes_an_ensemble_and_reports_errors_as_one_line(members, tmp_path):
    runner = CliRunner()
    out = tmp_path / "both.pt"
    r = runner.invoke(main, ["ensemble", str(members[0]), str(members[1]), str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and load_checkpoint(out)["arch"] == "ensemble"
    r = runner.invoke(main, ["ensemble", str(members[0]), str(members[1]), str(out)])
    assert r.exit_code == 1 and "--overwrite" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["ensemble", str(members[0]), str(out.with_name("x.pt"))])
    assert r.exit_code == 1 and "at least two models" in r.output


def test_a_forged_ensemble_checkpoint_is_one_line_error(members, shards, tmp_path):
    both = load_checkpoint(write_ensemble([str(m) for m in members], tmp_path / "both.pt"))
    both["model_kwargs"] = {"members": [{"arch": "two-branch", "model_kwargs": {"widths": -1}}] * 2}
    save_checkpoint(both, tmp_path / "forged.pt")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "forged.pt"), str(shards), "--split", "val"])
    assert r.exit_code == 1 and "bad arguments for 'ensemble'" in r.output and "Traceback" not in r.output
