"""The state of one training run: what `training.train` sets up and its loop and
`training.epoch` work on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from training.config import TrainConfig
from training.data import Batches


@dataclass
class TrainingRun:
    """Everything the loop needs, made by `training.train._setup`."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    regions: tuple[str, ...]
    class_names: list[str]
    block_sizes: dict[str, list[int]]
    preprocessing: dict[str, Any]
    train: Batches
    val: Batches | None  # None: no validation (val_split none), every epoch is kept in turn
    model: nn.Module  # the bare model (checkpointed)
    train_model: nn.Module  # the model the step calls (DDP- or compile-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    autocast: Callable[[], Any]
    scaler: Any
    memory_format: torch.memory_format
    rank: int = 0
    world: int = 1
    step: int = 0
    start_epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    say: Callable[[str], None] = print
    init: dict[str, Any] | None = None  # where the run started (fine-tuning), else None
    arch: str = ""  # the network trained: cfg.model, or init's
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapped_frozen: bool = False  # whether train_model's DDP was built for frozen branches
    teachers: list[dict[str, Any]] | None = None  # the models distilled from (`training.teachers`), else None
    average: nn.Module | None = None  # the weights' moving average (`training.weight_average`), else None

    @property
    def scored_model(self) -> nn.Module:
        """The network validation scores and checkpoints store as ``model``: the average when kept."""
        return self.model if self.average is None else self.average.module
