"""Distillation (`train --teachers MODEL ...`, training.teachers) on tiny synthetic shard folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from shardfakes import make_fake_shards
from tinyruns import tiny_config

from prepro.errors import InputError
from training import zoo
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data import SplitSamples
from training.evaluate import evaluate
from training.teachers import distillation_loss, teacher_probabilities
from training.train import train


def cfg(**kw) -> TrainConfig:
    return tiny_config(**{"epochs": 1, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_fake_shards(tmp_path_factory.mktemp("d") / "shards")


@pytest.fixture(scope="module")
def teacher(shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "teacher"
    train(shards, run, cfg(epochs=3, lr=3e-3, seed=1), log=None)
    return run


def test_teacher_scores_are_its_flip_averaged_predictions(shards, teacher):
    samples = SplitSamples(str(shards), "val", regions=("eyes", "mouth"))
    probs, records = teacher_probabilities([str(teacher)], str(shards), samples, torch.device("cpu"))
    assert probs.shape == (len(samples), 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    m = evaluate(teacher, shards, split="val", tta_flip=True, tta_shift=False, out_dir=shards.parent / "ev")
    assert m["accuracy"] == pytest.approx(float((probs.argmax(1) == samples.targets).mean()))
    assert records[0]["sha256"] and records[0]["arch"] == "two-branch"
    twice, _ = teacher_probabilities([str(teacher)] * 2, str(shards), samples, torch.device("cpu"))
    assert np.allclose(twice, probs, atol=1e-6)  # the average of equal teachers is each


def test_teacher_must_know_every_class(teacher, tmp_path):
    other = make_fake_shards(tmp_path / "other", labels=("happy", "sad", "angry"))
    with pytest.raises(InputError, match="does not know the class.*angry"):
        train(other, tmp_path / "run", cfg(teachers=[str(teacher)]), log=None)


def test_distillation_loss_is_smallest_at_the_teacher():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    at = torch.log(teacher).requires_grad_(True)
    loss = distillation_loss(at, teacher, 2.0)
    loss.backward()
    assert at.grad.abs().max() < 1e-6 and abs(float(loss.detach())) < 1e-6  # KL: zero where they agree
    assert distillation_loss(torch.zeros(2, 3), teacher, 2.0) > loss
    onehot = torch.tensor([[1.0, 0, 0]])
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    assert distillation_loss(logits, onehot, 1.0) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0]))), abs=1e-4)


def test_weight_zero_trains_as_without_teachers_and_records_them(shards, teacher, tmp_path):
    plain = train(shards, tmp_path / "plain", cfg(), log=None)
    zero = train(shards, tmp_path / "zero", cfg(teachers=[str(teacher)], distill_weight=0.0), log=None)
    full = train(shards, tmp_path / "full", cfg(teachers=[str(teacher)], distill_weight=1.0), log=None)
    a, b, c = (load_checkpoint(Path(r.run_dir) / "last.pt") for r in (plain, zero, full))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
    assert a.get("teachers") is None
    assert [t["checkpoint"] for t in b["teachers"]] == [str(teacher / "best.pt")]
    zoo.ship(Path(zero.run_dir) / "best.pt", "student", {"title": "t"}, models_dir=tmp_path / "models")
    shipped = load_checkpoint(tmp_path / "models" / "student.pt")["teachers"]
    assert shipped == [{k: t[k] for k in ("model", "sha256", "arch", "epoch")} for t in b["teachers"]]


def test_resume_refuses_a_changed_teacher(shards, teacher, tmp_path):
    own = tmp_path / "t"
    shutil.copytree(teacher, own)
    run = tmp_path / "run"
    train(shards, run, cfg(teachers=[str(own)], epochs=1), log=None)
    train(shards, tmp_path / "t2", cfg(epochs=1, seed=5), log=None)
    shutil.copy(tmp_path / "t2" / "best.pt", own / "best.pt")
    with pytest.raises(InputError, match="changed since this run started"):
        train(shards, run, resume={"epochs": 2}, log=None)


def test_teachers_need_the_cache():
    with pytest.raises(InputError, match="cache"):
        cfg(teachers=["fer2013"], cache=False)
    with pytest.raises(InputError, match="at least one"):
        cfg(teachers=[])
