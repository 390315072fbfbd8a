"""Typed training configuration; stored as a plain dict in every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from training.errors import ConfigError

# Options that only steer a run (where/how long it runs, what it prints) and may change on resume.
RUN_CONTROL_FIELDS = frozenset({"epochs", "max_minutes", "patience", "device", "num_workers", "progress"})


@dataclass
class TrainConfig:
    """Everything that decides a training run; same config + same shards + same seed -> same weights on CPU."""

    # model
    model: str = "two-branch"  # registered architecture name (architectures.list_models())
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments, e.g. {"widths": [8, 16]}
    labels: list[str] | None = None  # class names to keep (e.g. drop contempt); None keeps every label of the shards
    # optimisation
    epochs: int = 30  # maximum number of epochs (the cosine schedule spans them)
    batch_size: int = 64  # samples per step and per process
    lr: float = 2e-3  # peak learning rate after warm-up (AdamW)
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warm-up length, in epochs (may be fractional)
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    # data
    class_weighting: str = "none"  # "none", "inverse" (inverse class frequency) or "sqrt" (its square root) in the loss
    balanced_sampler: bool = False  # draw training samples with probability inverse to their class frequency
    augment: bool = True  # random flip, shift/scale/rotation per block, brightness/contrast
    cache: bool = True  # load the splits into memory (a FER2013 train split is ~260 MB); False reads HDF5 lazily
    num_workers: int = 0  # DataLoader worker processes (HDF5 opened lazily in each); 0 reads in the main process
    train_split: str = "train"  # split to train on
    val_split: str = "val"  # split used to select the best epoch (FER2013: PublicTest)
    # control
    seed: int = 0  # seeds model init, sampling order, augmentation and dropout
    patience: int = 0  # stop after this many epochs without a better val macro-F1; 0 disables early stopping
    max_minutes: float = 0.0  # wall-clock budget; training stops (after validating) when it is spent; 0 = none
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU
    channels_last: bool = True  # channels-last memory format on CUDA; ignored on CPU
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        # Plain JSON types only, so the config compares equal after a checkpoint round trip.
        try:
            self.model_kwargs = json.loads(json.dumps(self.model_kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model_kwargs must be JSON-serialisable ({e})") from None
        if self.labels is not None:
            self.labels = [str(x) for x in self.labels]

    def validate(self) -> None:
        """Raise ConfigError (one line) for values that cannot work."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.class_weighting in ("none", "inverse", "sqrt"),
             f"class_weighting must be none, inverse or sqrt, got {self.class_weighting!r}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (self.max_minutes >= 0, f"max_minutes must be >= 0, got {self.max_minutes}"),
            (self.labels is None or len(self.labels) >= 2, "labels must name at least 2 classes"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def differing_fields(a: TrainConfig, b: TrainConfig, ignore: frozenset[str] = RUN_CONTROL_FIELDS) -> list[str]:
    """Names of the fields (outside ``ignore``) whose values differ."""
    da, db = a.to_dict(), b.to_dict()
    return [k for k in da if k not in ignore and da[k] != db[k]]
