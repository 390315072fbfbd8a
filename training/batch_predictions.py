"""A model's predictions over shard batches (with optional mirror-image TTA), and whether a
checkpoint asks for that TTA by default; shared by training (validation) and evaluation.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from training.data import flip_batch, normalize, to_float


@torch.no_grad()
def predict_batches(model: nn.Module, batches, regions: Sequence[str], device: torch.device,
                    autocast: Callable[[], Any], memory_format: torch.memory_format,
                    tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, region weights, labels) over every sample of ``batches`` (this process's part, in
    order); TTA averages each face's and its mirror image's probabilities."""
    model.eval()
    n = len(batches)
    order = np.arange(batches.rank, n, batches.world)
    logits, weights, labels = [], [], []
    for batch in batches.iterate(order, drop_last=False):
        x = normalize(to_float(batch, regions, device, memory_format), regions)
        with autocast():
            out = model(x)
            lg, w = out.logits.float(), out.region_weights.float()
            if tta_flip:
                out2 = model(flip_batch(x, regions))
                # Averaged probabilities, kept as log-probabilities so callers can treat them as logits.
                lg = torch.log((lg.softmax(1) + out2.logits.float().softmax(1)) / 2)
                w = (w + out2.region_weights.float()) / 2
        logits.append(lg.cpu().numpy())
        weights.append(w.cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape, np.float32)  # noqa: E731
    return cat(logits, (0, 0)), cat(weights, (0, 0)), cat(labels, (0,)).astype(np.int64)


def model_tta_flip(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint's predictions average each face with its mirror image by default: its
    model card says so (set when it paid on the holdout that chose the epoch)."""
    return bool((ckpt.get("card") or {}).get("tta_flip", False))
