"""The settings of the tests' tiny training runs (a few seconds each on `shardfakes`' shards)."""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig

TINY = {"widths": [8, 16, 32], "feat_dim": 32}  # the networks' kwargs for a few thousand parameters


def tiny_config(**settings: Any) -> TrainConfig:
    """A run of the TINY network in small batches with a short warm-up and no progress bar;
    ``settings`` add to or replace any of these."""
    return TrainConfig(**{"batch_size": 16, "warmup_epochs": 0.5, "progress": False, "model_kwargs": TINY,
                          **settings})
