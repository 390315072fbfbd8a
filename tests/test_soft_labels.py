"""`train --soft-labels`: cross-entropy against the FER+ vote distribution, scored on the majority label."""

from __future__ import annotations

import numpy as np
import pytest
from shardfakes import make_fake_shards
from tinyruns import tiny_config

from prepro.errors import InputError
from training.config import TrainConfig
from training.data import SplitSamples
from training.train import train


def _cfg(**kw) -> TrainConfig:
    return tiny_config(**{"epochs": 8, "lr": 3e-3, "label_smoothing": 0.0, "augment": False, **kw})


def test_the_vote_distribution_of_the_trained_classes(tmp_path):
    shards = make_fake_shards(tmp_path / "s", votes=0.7, per_class={"train": 4, "val": 1, "test": 1})
    samples = SplitSamples(str(shards), "train", soft_labels=True)
    dist = samples.vote_distribution()
    assert dist.shape == (12, 3) and np.allclose(dist.sum(1), 1)
    assert np.allclose(dist[np.arange(12), samples.targets], 0.7)


def test_soft_labels_learn_the_votes_and_are_scored_on_the_label(tmp_path):
    """The votes here mostly name the next class: learning them scores badly on the label, which
    validation keeps scoring; learning the label scores well."""
    shards = make_fake_shards(tmp_path / "s", votes=0.2)
    soft = train(shards, tmp_path / "soft", _cfg(soft_labels=True), log=None)
    hard = train(shards, tmp_path / "hard", _cfg(), log=None)
    assert hard.last["val_acc"] > 0.8 and soft.last["val_acc"] < 0.4


def test_soft_labels_without_votes_say_so(tmp_path):
    shards = make_fake_shards(tmp_path / "s", per_class={"train": 4, "val": 1, "test": 1})
    with pytest.raises(InputError, match="soft labels need the taggers' votes.*--dataset ferplus"):
        train(shards, tmp_path / "run", _cfg(soft_labels=True), log=None)
