"""Typed training configuration; stored as a plain dict in every checkpoint.

Every field is a `prepro.settings.setting`: `faceblocks train`'s options, the `[train]` table of
`faceblocks run` and its template, and ``python -m training.train`` (for torchrun) are generated
from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from architectures.names import MODEL_NAMES
from prepro.errors import InputError
from prepro.settings import check, from_mapping, setting, to_dict

SPLIT_CHOICES = ("train", "val", "test", "holdout")
NO_VALIDATION = "none"  # val_split that trains on the whole train split and keeps the last epoch
CLASS_WEIGHTINGS = ("none", "inverse", "sqrt")
SCRATCH_LR = 2e-3  # the default learning rate of a new network
FINETUNE_LR = 2e-4  # ... and of one started from a trained model (init): ten times lower


@dataclass
class TrainConfig:
    """Everything that decides a training run; same config + same shards + same seed -> same weights on CPU."""

    # model
    model: str = setting("two-branch", "network: two-branch (eyes + mouth, learned region attention), "
                         "two-branch-face (+ whole-face context), two-branch-concat (original design), "
                         "face-cnn (whole-face baseline), ensemble (members' probabilities averaged; "
                         "model_kwargs members)", "str", choices=MODEL_NAMES)
    model_kwargs: dict[str, Any] = setting({}, "extra constructor arguments of the network, e.g. "
                                           '{"widths": [16, 32, 64, 128]}', "dict")
    labels: list[str] | None = setting(None, "class names to keep (e.g. leave out contempt); none keeps every "
                                       "label of the shards", "str_list", optional=True)
    init: str | None = setting(None, "fine-tune: start from this model's network and weights (a shipped model's "
                               "name such as fer2013, a run folder or a .pt file); the classifier head is rebuilt "
                               "for the shards' classes (rows of shared class names kept), the shards must be cut "
                               "like the model's; model and model_kwargs come from it. A resumed run continues "
                               "from its last.pt and cannot change init", "str", optional=True)
    freeze_epochs: int = setting(0, "with init: train only the classifier head for the first N epochs (the "
                                 "branches frozen); 0 = never, -1 = throughout", "int", low=-1, high=100_000)
    # optimisation
    epochs: int = setting(30, "maximum number of epochs (the cosine schedule spans them)", "int", low=1,
                          high=100_000, run_control=True)
    # At least 2: batch normalisation cannot normalise a batch of one sample.
    batch_size: int = setting(64, "samples per step and per process (at least 2)", "int", low=2, high=1_000_000)
    lr: float | None = setting(None, f"peak learning rate after warm-up (AdamW); by default {SCRATCH_LR:g}, or "
                               f"{FINETUNE_LR:g} with init (fine-tuning)", "float", low=1e-12, high=10, optional=True)
    weight_decay: float = setting(0.05, "AdamW decoupled weight decay", "float", low=0, high=10)
    warmup_epochs: float = setting(1.0, "linear warm-up length, in epochs (may be fractional)", "float", low=0,
                                   high=1000)
    min_lr_ratio: float = setting(0.01, "the cosine ends at lr times this", "float", low=0, high=1)
    label_smoothing: float = setting(0.1, "cross-entropy label smoothing", "float", low=0, high=0.99)
    grad_clip: float = setting(5.0, "maximum gradient norm; 0 turns clipping off", "float", low=0, high=1e6)
    soft_labels: bool = setting(False, "learn from the taggers' vote distribution (FER+ shards: cross-entropy "
                                "against the votes for the trained classes, single votes dropped, as the FER+ "
                                "paper's best mode) instead of the majority label; validation and evaluation "
                                "still score the majority label", "bool")
    mixup: float = setting(0.0, "mixup strength (Beta(a, a) mixing of pairs of samples and labels); 0 = off",
                           "float", low=0, high=10)
    teachers: list[str] | None = setting(None, "distil: also learn from these trained models (shipped names, run "
                                         "folders or .pt files, cut like the shards), their probabilities on "
                                         "each training sample averaged (training.teachers)", "str_list",
                                         optional=True, repeatable=True, metavar="MODEL")
    distill_weight: float = setting(0.5, "with teachers: the share of the loss that follows them (the rest "
                                    "follows the labels)", "float", low=0, high=1)
    distill_temperature: float = setting(2.0, "with teachers: both their and the student's probabilities are "
                                         "softened by this temperature in the distillation loss", "float",
                                         low=0.05, high=100)
    ema_decay: float = setting(0.0, "keep an exponential moving average of the weights, moved towards them by "
                               "1 - decay after every step (e.g. 0.999); validation, best.pt and every use of the "
                               "model take the average (training.weight_average); 0 = off", "float", low=0,
                               high=0.99999)
    # data
    class_weighting: str = setting("none", "loss weights per class: none, inverse class frequency, or its "
                                   "square root", "str", choices=CLASS_WEIGHTINGS)
    balanced_sampler: bool = setting(False, "draw training samples with probability inverse to their class "
                                     "frequency", "bool")
    augment: bool = setting(True, "random flip, shift, scale, rotation per block, brightness and contrast", "bool")
    erase: float = setting(0.0, "random erasing: the probability that a block of a training sample has one "
                           "random rectangle (2-25% of it) set to mid grey; 0 = off", "float", low=0, high=1)
    min_quality: float = setting(0.0, "train only on samples whose landmark quality is at least this "
                                 "(validation and evaluation keep every sample)", "float", low=0, high=1)
    cache: bool = setting(True, "hold the splits in memory as uint8 (on the GPU when training there); off "
                          "reads the HDF5 shards lazily", "bool")
    num_workers: int = setting(0, "DataLoader worker processes when not cached; 0 reads in the main process",
                               "int", low=0, high=256, run_control=True)
    train_split: str = setting("train", "split to train on", "str", choices=SPLIT_CHOICES[:3])
    val_split: str = setting("holdout", "split that selects the best epoch; holdout = a stratified, seeded "
                             "fraction of the train split, never trained on (FER2013: keep PublicTest for "
                             "reporting); none = no validation: train on the whole train split and keep the last "
                             "epoch (a final fit, once epochs and settings were chosen on a holdout)", "str",
                             choices=SPLIT_CHOICES + (NO_VALIDATION,))
    holdout_frac: float = setting(0.1, "fraction of the train split held out when val_split is holdout", "float",
                                  low=0.01, high=0.5)
    # control
    seed: int = setting(0, "seeds the holdout (unless holdout_seed), model init, sampling order, augmentation and "
                        "dropout", "int", low=0, high=2**31 - 1)
    holdout_seed: int | None = setting(None, "seeds the holdout alone, so runs of several seeds share one holdout "
                                       "(an ensemble of them is then scored on faces none trained on); none = seed",
                                       "int", low=0, high=2**31 - 1, optional=True)
    patience: int = setting(0, "stop after this many epochs without a better validation macro-F1; 0 = never",
                            "int", low=0, high=100_000, run_control=True)
    max_minutes: float = setting(0.0, "wall-clock budget; training stops (after validating) when it is spent; "
                                 "0 = none", "float", low=0, high=1e7, run_control=True)
    device: str = setting("auto", "auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...", "str",
                          run_control=True)
    threads: int = setting(0, "CPU threads for torch; 0 = one per core", "int", low=0, high=1024, run_control=True)
    amp: bool = setting(True, "mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU", "bool")
    channels_last: bool = setting(True, "channels-last memory format (faster convolutions on most devices)",
                                  "bool")
    compile: bool = setting(False, "torch.compile the network on CUDA (a minute of compiling, faster epochs)",
                            "bool", run_control=True)
    progress: bool = setting(True, "show a progress bar", "bool", run_control=True)

    def __post_init__(self) -> None:
        check(self)
        if self.model_kwargs:  # checked now, so a bad network fails before any stage or data loading
            # imported here: keeps faceblocks -h fast (torch)
            from architectures import check_model_arguments

            check_model_arguments(self.model, 7, self.model_kwargs)
        if self.lr is None:
            self.lr = FINETUNE_LR if self.init is not None else SCRATCH_LR
        if self.freeze_epochs and self.init is None:
            raise InputError("freeze_epochs needs init: the branches of a new network have nothing to keep")
        if self.labels is not None and len(self.labels) < 2:
            raise InputError("labels must name at least 2 classes")
        if self.teachers is not None and not self.teachers:
            raise InputError("teachers must name at least one model")
        if self.teachers and not self.cache:
            raise InputError("teachers need the cached data (cache on): their scores are held beside the samples")
        if self.val_split == NO_VALIDATION and self.patience:
            raise InputError("patience needs a validation part: with val_split none every epoch is kept in turn, "
                             "so set patience 0 (choose the epochs on a holdout first)")
        if self.val_split == self.train_split:
            raise InputError(f"val_split must differ from train_split ({self.train_split}); use holdout to "
                             "carve a validation part out of it")

    @property
    def holdout_seed_used(self) -> int:
        """The seed that draws the holdout."""
        return self.seed if self.holdout_seed is None else self.holdout_seed

    @property
    def holdout_key(self) -> tuple[str, float, int]:
        """(train split, fraction, seed): what decides the holdout carved from the train split, so
        that runs with equal keys share it."""
        return self.train_split, self.holdout_frac, self.holdout_seed_used

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "TrainConfig":
        """A config from a checkpoint or a config table; unknown keys and bad values are an InputError."""
        return from_mapping(cls, d, where)

    def resumed_with(self, changes: dict[str, Any]) -> "TrainConfig":
        """This (stored) config with run-control ``changes`` applied; anything else is refused."""
        control = {f.name for f in fields(self) if f.metadata["setting"].run_control}
        other = sorted(k for k in changes if k not in control)
        if other:
            raise InputError(f"a resumed run keeps its stored settings; it cannot change "
                             f"{', '.join(other)} (only {', '.join(sorted(control))})")
        return replace(self, **changes)


def differing_fields(a: TrainConfig, b: TrainConfig, include_control: frozenset[str] = frozenset()) -> list[str]:
    """Names of the fields whose values differ, leaving out run-control fields other than
    ``include_control``."""
    da, db = a.to_dict(), b.to_dict()
    return [f.name for f in fields(a) if (not f.metadata["setting"].run_control or f.name in include_control)
            and da[f.name] != db[f.name]]
