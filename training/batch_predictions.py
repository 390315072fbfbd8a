"""A model's predictions over shard batches (with optional test-time augmentation, `training.tta`),
shared by training (validation) and evaluation.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from training.data import normalize, to_float
from training.tta import averaged_outputs


@torch.no_grad()
def predict_batches(model: nn.Module, batches, regions: Sequence[str], device: torch.device,
                    autocast: Callable[[], Any], memory_format: torch.memory_format,
                    tta_flip: bool = False, tta_shift: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, region weights, labels) over every sample of ``batches`` (this process's part, in
    order); with TTA each face's probabilities are averaged over its views (`training.tta`)."""
    model.eval()
    n = len(batches)
    order = np.arange(batches.rank, n, batches.world)
    logits, weights, labels = [], [], []
    for batch in batches.iterate(order, drop_last=False):
        x = normalize(to_float(batch, regions, device, memory_format), regions)
        with autocast():
            if tta_flip or tta_shift:
                probs, w = averaged_outputs(model, x, regions, tta_flip, tta_shift)
                lg = torch.log(probs)  # log-probabilities, so that callers can treat them as logits
            else:
                out = model(x)
                lg, w = out.logits.float(), out.region_weights.float()
        logits.append(lg.cpu().numpy())
        weights.append(w.cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape, np.float32)  # noqa: E731
    return cat(logits, (0, 0)), cat(weights, (0, 0)), cat(labels, (0,)).astype(np.int64)
