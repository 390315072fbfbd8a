"""A checkpoint ready to classify blocks, and the face-cutting settings its training shards were
made with.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from prepro.config import PreprocessConfig
from prepro.cut_settings import BlockConfig
from prepro.settings import from_mapping, to_dict
from training.errors import CheckpointError
from training.tta import model_tta


class Classifier:
    """A checkpoint ready to classify blocks: the network and what it was trained on."""

    def __init__(self, model: str | os.PathLike, device: str = "auto", tta_flip: bool | None = None,
                 tta_shift: bool | None = None):
        # imported here: torch loads on first use, not when this module is imported
        from training.checkpoint import build_model_from_checkpoint
        from training.devices import resolve_device
        from training.model_names import resolve_checkpoint

        self.path, self.ckpt = resolve_checkpoint(model)
        self.preprocessing = self.ckpt.get("preprocessing") or {}
        if "blocks" not in self.preprocessing:
            raise CheckpointError(f"{self.path} does not record the block preprocessing it was trained with "
                                  "(trained on shards not made by `faceblocks preprocess`?)")
        self.blocks = BlockConfig.from_dict(self.preprocessing["blocks"])
        for region, size in self.ckpt["block_sizes"].items():
            if list(getattr(self.blocks, f"{region}_size")) != list(size):
                raise CheckpointError(f"{self.path}: the block sizes of its preprocessing and its model differ")
        self.device = resolve_device(device)
        self.model = build_model_from_checkpoint(self.ckpt).to(self.device)
        self.class_names = list(self.ckpt["class_names"])
        self.regions = list(self.ckpt["regions"])
        self.tta_flip, self.tta_shift = model_tta(self.ckpt, tta_flip, tta_shift)

    @classmethod
    def load(cls, model: str | os.PathLike, device: str = "auto", tta_flip: bool | None = None,
             tta_shift: bool | None = None) -> "Classifier":
        """A run folder, a .pt file, or a shipped model's name (`faceblocks models`)."""
        return cls(model, device, tta_flip, tta_shift)

    def cut_settings(self, overrides: dict[str, Any] | None = None):
        """How to find faces and cut blocks: as the training shards were, with ``overrides``."""
        # imported here: torch loads on first use, not when this module is imported
        from training.checkpoint import stored_cut_config

        stored = to_dict(stored_cut_config(self.preprocessing))
        flat = {**{k: v for k, v in stored.items() if k not in ("detection", "blocks")},
                **stored["detection"], **stored["blocks"], **(overrides or {})}
        return from_mapping(PreprocessConfig, flat).cut_settings()

    def classify(self, blocks: list) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, region weights) for a list of `prepro.blocks.Blocks`, one forward pass."""
        import torch

        # imported here: torch loads on first use, not when this module is imported
        from training.checkpoint import require_finite_outputs
        from training.data import normalize
        from training.tta import averaged_outputs

        batch = {r: torch.from_numpy(np.stack([getattr(b, r) for b in blocks])).unsqueeze(1)
                 .to(self.device).float().div_(255.0) for r in self.regions}
        x = normalize(batch, self.regions)
        with torch.no_grad():  # the same views and averaging as `evaluate`
            probs, weights = averaged_outputs(self.model, x, self.regions, self.tta_flip, self.tta_shift)
        probs, weights = probs.cpu().numpy(), weights.cpu().numpy()
        require_finite_outputs(self.path, probs, weights)
        return probs, weights
