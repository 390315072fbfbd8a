"""Fine-tuning (`train --init MODEL`) on tiny synthetic shard folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shardfakes import make_fake_shards
from tinyruns import TINY, tiny_config
from two_processes import torchrun_train

from prepro.errors import InputError, MismatchError
from training.config import FINETUNE_LR, SCRATCH_LR, TrainConfig
from training.evaluate import evaluate
from training.train import train

ROOT = Path(__file__).resolve().parents[1]


def cfg(**kw) -> TrainConfig:
    """No network kwargs by default: a fine-tuned run takes its network from --init."""
    return tiny_config(**{"epochs": 1, "model_kwargs": {}, **kw})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny model trained on happy, sad and surprise: the model fine-tuned below."""
    shards = make_fake_shards(tmp_path_factory.mktemp("base") / "shards")
    run = tmp_path_factory.mktemp("runs") / "base"
    train(shards, run, cfg(epochs=2, lr=3e-3, model_kwargs=TINY), log=None)
    return run


@pytest.fixture(scope="module")
def contempt_shards(tmp_path_factory) -> Path:
    return make_fake_shards(tmp_path_factory.mktemp("ck") / "shards", labels=("happy", "contempt", "surprise"),
                            per_class={"train": 12, "val": 4, "test": 4}, seed=3)


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def test_lower_default_lr_with_init_and_freeze_needs_init():
    assert cfg().lr == SCRATCH_LR and cfg(init="fer2013").lr == FINETUNE_LR < SCRATCH_LR
    assert cfg(init="fer2013", lr=1e-3).lr == 1e-3
    with pytest.raises(InputError, match="freeze_epochs needs init"):
        cfg(freeze_epochs=2)


def test_head_rebuilt_for_a_class_the_model_lacks(base_run, contempt_shards, tmp_path):
    """--init from a run folder: the body is the model's, the head has a row per shard class, and
    the rows of shared classes are the model's; the run records where it started."""
    from training.init_from import _head_linear, load_start_weights, network, start_model
    from architectures import create_model

    c = cfg(init=str(base_run))
    start = start_model(c, str(contempt_shards))
    assert network(c, start, None) == ("two-branch", TINY)
    names = ["happy", "surprise", "contempt"]  # the classes in the shards' label order (ALL_LABELS)
    model = create_model("two-branch", 3, **TINY)
    load_start_weights(model, start, names)
    src = _ckpt(base_run / "best.pt")
    head, old = _head_linear(model), src["model"]
    w, b = old["head.1.weight"], old["head.1.bias"]
    known = src["class_names"]
    for row, name in ((0, "happy"), (1, "surprise")):
        assert torch.equal(head.weight[row], w[known.index(name)]) and head.bias[row] == b[known.index(name)]
    assert not any(torch.equal(head.weight[2], w[i]) for i in range(len(known)))  # contempt: a fresh row
    for k, v in old.items():
        if not k.startswith("head."):
            assert torch.equal(model.state_dict()[k], v), k

    r = train(contempt_shards, tmp_path / "ft", cfg(init=str(base_run), epochs=1), log=None)
    assert r.init["checkpoint"] == str(base_run / "best.pt") and r.init["new_classes"] == ["contempt"]
    result = json.loads((tmp_path / "ft" / "result.json").read_text())
    best = _ckpt(tmp_path / "ft" / "best.pt")
    assert result["init"] == best["init"] == r.init and len(r.init["sha256"]) == 64
    assert best["config"]["init"] == str(base_run) and best["class_names"] == names
    assert (best["arch"], best["model_kwargs"], best["config"]["model_kwargs"]) == ("two-branch", TINY, {})
    # the stored config is the one given: resuming (or `faceblocks run` checking the stage) with it fits
    again = train(contempt_shards, tmp_path / "ft", cfg(init=str(base_run), epochs=1), resume=True, log=None)
    assert again.epochs_done == 1


def test_branches_frozen_throughout_and_then_freed(base_run, contempt_shards, tmp_path):
    before = _ckpt(base_run / "best.pt")["model"]
    train(contempt_shards, tmp_path / "frozen", cfg(init=str(base_run), freeze_epochs=-1, epochs=1), log=None)
    after = _ckpt(tmp_path / "frozen" / "last.pt")["model"]
    body = [k for k in before if not k.startswith("head.")]
    assert all(torch.equal(before[k], after[k]) for k in body)  # weights and batch-norm statistics
    assert not torch.equal(before["head.1.weight"][0], after["head.1.weight"][0])  # the head learned
    train(contempt_shards, tmp_path / "freed", cfg(init=str(base_run), freeze_epochs=1, epochs=2), log=None)
    freed = _ckpt(tmp_path / "freed" / "last.pt")["model"]
    assert any(not torch.equal(before[k], freed[k]) for k in body)


@pytest.mark.slow
@pytest.mark.parametrize("freeze_epochs", [1, -1])
def test_frozen_branches_under_torchrun(base_run, contempt_shards, tmp_path, freeze_epochs):
    """Two processes (gloo): frozen branches give DDP parameters without a gradient; the run must
    neither stop on them nor let them move, and must train them once freed."""
    run = tmp_path / "ddp"
    proc = torchrun_train([str(contempt_shards), str(run), "--init", str(base_run), "--freeze-epochs",
                           str(freeze_epochs), "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                           "--no-progress"], timeout=180)
    assert proc.returncode == 0 and "find_unused_parameters" not in proc.stderr, proc.stderr[-3000:]
    before, after = _ckpt(base_run / "best.pt")["model"], _ckpt(run / "last.pt")["model"]
    body = [k for k in before if not k.startswith("head.")]
    moved = [k for k in body if not torch.equal(before[k], after[k])]
    assert (not moved) if freeze_epochs == -1 else bool(moved)


def test_shards_cut_unlike_the_model_refused_with_evaluates_message(base_run, tmp_path):
    other = make_fake_shards(tmp_path / "big", eyes_size=(24, 48))
    with pytest.raises(MismatchError) as by_evaluate:
        evaluate(base_run, other, out_dir=tmp_path / "ev")
    with pytest.raises(MismatchError) as by_train:
        train(other, tmp_path / "ft", cfg(init=str(base_run)), log=None)
    assert str(by_train.value) == str(by_evaluate.value) and "preprocess with --eyes-size" in str(by_train.value)
    assert not (tmp_path / "ft" / "last.pt").exists()

    shards = make_fake_shards(tmp_path / "margin")
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["params"]["blocks"]["eyes_margin"] = 0.9
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MismatchError, match="was cut differently .*--eyes-margin 0.2 in training, 0.9 here") as e:
        train(shards, tmp_path / "ft2", cfg(init=str(base_run)), log=None)
    assert "--allow-mismatch" not in str(e.value)  # training has no way around it


def test_model_given_against_init_refused(base_run, contempt_shards, tmp_path):
    with pytest.raises(InputError, match="model 'face-cnn' differs"):
        train(contempt_shards, tmp_path / "x", cfg(init=str(base_run), model="face-cnn"), log=None)


def test_resume_continues_a_fine_tuned_run_and_refuses_init(base_run, contempt_shards, tmp_path):
    """A resumed fine-tuning run continues from its last.pt (init is not read again) and keeps its
    record; --init cannot be given with --resume."""
    run = tmp_path / "ft"
    first = train(contempt_shards, run, cfg(init=str(base_run), epochs=1), log=None)
    again = train(contempt_shards, run, resume={"epochs": 2}, log=None)
    assert again.epochs_done == 2 and again.init == first.init
    with pytest.raises(InputError, match="cannot change init"):
        train(contempt_shards, run, resume={"epochs": 3, "init": "fer2013"}, log=None)


def test_cli_help_and_init_by_cli(base_run, contempt_shards, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, str(ROOT / "cli.py"), "train"]
    text = subprocess.run(cli + ["--help"], capture_output=True, text=True, env=env, check=True).stdout
    flat = " ".join(text.split())
    assert "--init" in flat and "--freeze-epochs" in flat and f"or {FINETUNE_LR:g} with init" in flat
    p = subprocess.run(cli + [str(contempt_shards), str(tmp_path / "c"), "--init", str(base_run), "--epochs", "1",
                              "--batch-size", "16", "--quiet"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "fine-tuning from" in p.stdout + p.stderr
    p = subprocess.run(cli + [str(contempt_shards), str(tmp_path / "c"), "--resume", "--init", str(base_run)],
                       capture_output=True, text=True, env=env)
    assert p.returncode != 0 and "cannot change init" in p.stderr and "Traceback" not in p.stderr
