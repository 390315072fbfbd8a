"""faceblocks training and evaluation.

``from training import TrainConfig, train, evaluate``. The config and the errors import nothing
heavy; ``train``, ``evaluate`` and friends load torch on first use.
"""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig
from training.errors import (BlockSizeMismatchError, CheckpointError, ConfigError, EmptySplitError,
                             LabelMismatchError, PreprocessingMismatchError, RunExistsError, TrainingDivergedError,
                             TrainingError)

_LAZY = {"train": "training.engine", "evaluate": "training.engine", "format_metrics_table": "training.engine",
         "TrainResult": "training.engine", "load_checkpoint": "training.checkpoint"}

__all__ = ["TrainConfig", "TrainingError", "ConfigError", "EmptySplitError", "BlockSizeMismatchError",
           "LabelMismatchError", "PreprocessingMismatchError", "RunExistsError", "TrainingDivergedError",
           "CheckpointError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
