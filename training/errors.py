"""Errors the training library raises; each carries a one-line message saying what to do."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: a problem the user can fix (the message says how)."""


class ConfigError(TrainingError):
    """An invalid training option, or one that contradicts the run being resumed."""


class EmptySplitError(TrainingError):
    """A split (after label filtering) holds no samples."""


class BlockSizeMismatchError(TrainingError):
    """The shards' block sizes differ from those a checkpoint was trained on."""


class PreprocessingMismatchError(TrainingError):
    """The shards' blocks were cut with other margins, rotation or padding than a checkpoint's."""


class LabelMismatchError(TrainingError):
    """A checkpoint and a shard folder share no label names."""


class RunExistsError(TrainingError):
    """The run folder already holds a run and neither resume nor overwrite was asked for."""


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing, damaged, unsafe, or for another architecture."""
