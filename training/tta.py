"""Test-time augmentation: each face's prediction averaged over views of its blocks.

``flip``: the face and its mirror image (every block mirrored, as training's flip does). ``shift``:
the blocks also moved by one pixel in each of the eight directions (3x3 offsets with the border
replicated; a face's blocks move together), so with ``flip`` 18 views. A model's card says which
it uses by default (``tta_flip``, ``tta_shift``), chosen on the holdout that chose its epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

# (dx, dy) of each shifted view, the unshifted one first
SHIFTS = ((0, 0),) + tuple((dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0))


def model_tta(ckpt: dict[str, Any], flip: bool | None = None, shift: bool | None = None) -> tuple[bool, bool]:
    """(flip, shift): the views a checkpoint's predictions average: ``flip`` and ``shift`` as given,
    and where None, as its card says."""
    card = ckpt.get("card") or {}
    return (bool(card.get("tta_flip", False)) if flip is None else flip,
            bool(card.get("tta_shift", False)) if shift is None else shift)


def tta_name(flip: bool, shift: bool) -> str:
    """How the views are named in metrics and messages."""
    return "+".join(k for k, on in (("flip", flip), ("shift", shift)) if on) or "none"


def views(x: dict[str, torch.Tensor], regions: Sequence[str], flip: bool, shift: bool
          ) -> Iterator[dict[str, torch.Tensor]]:
    """The views of a batch of normalised blocks, the batch itself first."""
    # imported here: the card's defaults (`model_tta`) are read where torch is not loaded
    import torch.nn.functional as F

    from training.data import flip_batch

    bases = [x, flip_batch(x, regions)] if flip else [x]
    for base in bases:
        if not shift:
            yield base
            continue
        padded = {r: F.pad(base[r], (1, 1, 1, 1), mode="replicate") for r in regions}
        for dx, dy in SHIFTS:
            yield {r: padded[r][..., 1 + dy:1 + dy + base[r].shape[-2], 1 + dx:1 + dx + base[r].shape[-1]]
                   for r in regions}


def averaged_outputs(model: nn.Module, x: dict[str, torch.Tensor], regions: Sequence[str], flip: bool,
                     shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities, region weights) of a batch, each averaged over its views."""
    probs = weights = None
    n = 0
    for view in views(x, regions, flip, shift):
        out = model(view)
        p, w = out.logits.float().softmax(1), out.region_weights.float()
        probs, weights = (p, w) if probs is None else (probs + p, weights + w)
        n += 1
    return probs / n, weights / n
