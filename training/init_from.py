"""Fine-tuning: a training run that starts from a trained model (`TrainConfig.init`).

The network and its weights come from the model; its classifier head is rebuilt when the shards'
classes differ (the rows of class names both know are kept); the shards must be cut like the
model's training shards (the check `evaluate` makes); the branches (everything but the head) may
be frozen for the first epochs. The run records where it started (`StartModel.record`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prepro.errors import InputError
from prepro.outputs import sha256_file
from prepro.shards import Manifest
from training.checkpoint import build_model_from_checkpoint
from training.config import TrainConfig
from training.model_names import resolve_checkpoint
from training.shard_fit import require_cut_like_model

HEAD = "head"  # the classifier of every architecture: a Sequential ending in its Linear layer


@dataclass
class StartModel:
    """The model a run starts from."""

    ref: str  # as given (init)
    path: Path
    ckpt: dict[str, Any]

    def record(self, class_names: list[str]) -> dict[str, Any]:
        """Where the run started, for its checkpoints and result.json."""
        known = list(self.ckpt["class_names"])
        return {"model": self.ref, "checkpoint": str(self.path), "sha256": sha256_file(self.path),
                "arch": self.ckpt["arch"], "epoch": self.ckpt["epoch"], "class_names": known,
                "kept_classes": [c for c in class_names if c in known],
                "new_classes": [c for c in class_names if c not in known]}


def start_model(cfg: TrainConfig, shards_dir: str) -> StartModel:
    """The model ``cfg.init`` names, checked against the shards. Its network is the run's: ``cfg``
    may name it (model, model_kwargs) or leave them at their defaults, and is stored as given."""
    path, ckpt = resolve_checkpoint(cfg.init)
    if ckpt["arch"] == "ensemble":  # one classifier head per member: fine-tune the members one by one
        raise InputError(f"init {cfg.init} is an ensemble: fine-tune each of its members, then join them again "
                         "with `faceblocks ensemble`")
    defaults = TrainConfig()
    for key, theirs in (("model", ckpt["arch"]), ("model_kwargs", ckpt["model_kwargs"])):
        mine = getattr(cfg, key)
        if mine != theirs and mine != getattr(defaults, key):
            raise InputError(f"{key} {mine!r} differs from the {theirs!r} of init {cfg.init}: the network comes "
                             f"from the model fine-tuned; leave {key} out")
    require_cut_like_model(shards_dir, Manifest.load(shards_dir), ckpt, path.name)
    return StartModel(str(cfg.init), path, ckpt)


def network(cfg: TrainConfig, start: StartModel | None, resumed: dict[str, Any] | None) -> tuple[str, dict]:
    """(architecture, constructor arguments) of the network a run trains: its start model's, a
    resumed run's stored one, else the config's."""
    source = start.ckpt if start is not None else resumed
    return (source["arch"], source["model_kwargs"]) if source is not None else (cfg.model, cfg.model_kwargs)


def _head_linear(model: nn.Module) -> nn.Linear:
    return getattr(model, HEAD)[-1]


def load_start_weights(model: nn.Module, start: StartModel, class_names: list[str]) -> None:
    """Put the start model's weights into ``model`` (built for ``class_names``): every weight but the
    head's; the head's rows of the class names both know (the other rows keep their fresh init)."""
    source = build_model_from_checkpoint(start.ckpt)  # weights that do not fit: a clear CheckpointError
    head_keys = {f"{HEAD}.{k}" for k in getattr(source, HEAD).state_dict()}
    body = {k: v for k, v in source.state_dict().items() if k not in head_keys}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or set(missing) != head_keys:  # the same network: only the head is left to fill
        raise InputError(f"init {start.ref} does not fit the network built for the run")
    old, new = _head_linear(source), _head_linear(model)
    known = list(start.ckpt["class_names"])
    with torch.no_grad():
        for row, name in enumerate(class_names):
            if name in known:
                new.weight[row] = old.weight[known.index(name)]
                new.bias[row] = old.bias[known.index(name)]


def frozen_in(epoch: int, freeze_epochs: int) -> bool:
    """Whether the branches are frozen in (0-based) ``epoch``: -1 throughout, else the first N."""
    return freeze_epochs == -1 or epoch < freeze_epochs


def set_branches_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or free) everything but the head: no gradients, and batch-norm statistics kept (eval
    mode) while frozen. Call after ``model.train()``."""
    for name, child in model.named_children():
        if name == HEAD:
            continue
        for p in child.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            child.eval()
