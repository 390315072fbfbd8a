"""An exponential moving average of the weights (``train --ema-decay``), torch's own `AveragedModel`.

After every optimiser step the average moves towards the trained weights by ``1 - decay``
(batch-norm statistics too), so it smooths the last few thousand steps' noise. Validation picks the
best epoch by the average, and a checkpoint's ``model`` (what evaluate, predict, export, fine-tuning
and distillation load) is the average; the weights the optimiser trains travel beside it as
``online_model``, with the number of updates as ``ema_updates``, so a resumed run goes on exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

ONLINE_KEY = "online_model"  # the checkpoint field of the trained (not averaged) weights
UPDATES_KEY = "ema_updates"  # ... and of the number of steps averaged


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """The average of ``model``'s weights (a copy of them until the first update)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def checkpoint_fields(average: AveragedModel, model: nn.Module) -> dict[str, Any]:
    """What a checkpoint stores beside the averaged ``model`` to resume: the trained weights and
    the update count."""
    return {ONLINE_KEY: {k: v.detach().cpu() for k, v in model.state_dict().items()},
            UPDATES_KEY: int(average.n_averaged.item())}


def restore(average: AveragedModel, model: nn.Module, ckpt: dict[str, Any]) -> None:
    """Put a checkpoint's trained weights into ``model`` and its average into ``average``."""
    model.load_state_dict(ckpt[ONLINE_KEY])
    average.module.load_state_dict(ckpt["model"])
    average.n_averaged.fill_(int(ckpt[UPDATES_KEY]))


def stored_fields_ok(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint's averaging fields, where it has them, are well formed."""
    if ONLINE_KEY not in ckpt and UPDATES_KEY not in ckpt:
        return True
    online, updates = ckpt.get(ONLINE_KEY), ckpt.get(UPDATES_KEY)
    return (isinstance(online, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             and (not v.is_floating_point() or bool(torch.isfinite(v).all()))
                                             for k, v in online.items())
            and isinstance(updates, int) and not isinstance(updates, bool) and 0 <= updates <= 2**62)
