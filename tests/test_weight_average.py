"""The weights' moving average (`train --ema-decay`, training.weight_average) on tiny synthetic shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shardfakes import make_fake_shards
from tinyruns import tiny_config

from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.errors import CheckpointError
from training.evaluate import evaluate
from training.train import train
from prepro.errors import InputError


def cfg(**kw) -> TrainConfig:
    return tiny_config(**{"epochs": 3, "lr": 3e-3, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_fake_shards(tmp_path_factory.mktemp("d") / "shards")


def _floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_average_is_stored_as_the_model_and_trained_weights_beside_it(shards, tmp_path):
    plain = load_checkpoint(Path(train(shards, tmp_path / "plain", cfg(val_split="val"), log=None).run_dir)
                            / "last.pt")
    ema = load_checkpoint(Path(train(shards, tmp_path / "ema", cfg(val_split="val", ema_decay=0.9), log=None).run_dir)
                          / "last.pt", for_resume=True)
    assert "online_model" not in plain and "ema_updates" not in plain
    # Same seed, same steps: the trained weights are the plain run's, the stored model is their average.
    for k, v in _floats(plain["model"]).items():
        assert torch.equal(ema["online_model"][k], v), k
    assert any(not torch.equal(ema["model"][k], v) for k, v in _floats(plain["model"]).items())
    assert ema["ema_updates"] == ema["step"] > 0
    # What evaluate scores (best.pt) is the average the run's validation chose it by.
    m = evaluate(tmp_path / "ema", shards, split="val", tta_flip=False, tta_shift=False, out_dir=tmp_path / "ev")
    assert m["accuracy"] == pytest.approx(ema["history"][ema["best_epoch"] - 1]["val_acc"])


def test_a_slow_average_stays_near_the_start_and_decay_one_is_refused(shards, tmp_path):
    start = load_checkpoint(Path(train(shards, tmp_path / "one", cfg(epochs=2, lr=1e-12), log=None).run_dir)
                            / "last.pt")
    slow = load_checkpoint(Path(train(shards, tmp_path / "slow", cfg(epochs=2, ema_decay=0.99999), log=None).run_dir)
                           / "last.pt", for_resume=True)

    def distance(state):
        return sum(float((v - start["model"][k]).norm()) for k, v in _floats(state).items() if "running" not in k)

    # The average began as the weights after the first step and has barely moved since; they went on.
    assert distance(slow["model"]) < 0.3 * distance(slow["online_model"])
    with pytest.raises(InputError, match="ema_decay"):
        cfg(ema_decay=1.0)


def test_resume_gives_the_same_average(shards, tmp_path):
    c = cfg(epochs=4, ema_decay=0.95)
    train(shards, tmp_path / "whole", c, log=None)

    class Stop(Exception):
        pass

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Stop

    with pytest.raises(Stop):
        train(shards, tmp_path / "cut", c, log=stop_after_two)
    train(shards, tmp_path / "cut", resume=True, log=None)
    a = load_checkpoint(tmp_path / "whole" / "last.pt", for_resume=True)
    b = load_checkpoint(tmp_path / "cut" / "last.pt", for_resume=True)
    for key in ("model", "online_model"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["ema_updates"] == b["ema_updates"]


def test_damaged_average_fields_are_refused(shards, tmp_path):
    train(shards, tmp_path / "r", cfg(epochs=1, ema_decay=0.9), log=None)
    ck = load_checkpoint(tmp_path / "r" / "last.pt", for_resume=True)
    k = next(k for k, v in ck["online_model"].items() if v.is_floating_point())
    ck["online_model"][k] = ck["online_model"][k] * float("nan")
    save_checkpoint(ck, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="online_model"):
        load_checkpoint(tmp_path / "nan.pt")
    ck = load_checkpoint(tmp_path / "r" / "last.pt", for_resume=True)
    del ck["online_model"]
    save_checkpoint(ck, tmp_path / "r" / "last.pt")
    with pytest.raises(CheckpointError, match="online_model"):
        train(shards, tmp_path / "r", resume={"epochs": 2}, log=None)
