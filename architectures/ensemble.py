"""An ensemble of registered networks: their class probabilities averaged, as one network.

Each member is any other registered network with its own arguments; the ensemble's inputs are the
union of the members' regions and each member reads its own. Its logits are the log of the members'
mean probability (so a softmax of them is that mean, as averaging trained models asks), its region
weights the members' weights averaged with zero for a region a member does not read (rows still
sum to 1). Trained members are joined with `training.ensemble_checkpoint.combine_checkpoints`; an
ensemble built from scratch trains its members jointly.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from architectures.registry import Output, create_model, register_model

# The two networks of the shipped models: the ensemble an unconfigured `--model ensemble` trains.
DEFAULT_MEMBERS = ({"arch": "two-branch"}, {"arch": "two-branch-face"})
MAX_MEMBERS = 16  # far above a useful ensemble; beyond it, a mistake or a forged checkpoint


class EnsembleNet(nn.Module):
    """Members built by `create_model`, their probabilities averaged."""

    def __init__(self, num_classes: int, members: Sequence[dict[str, Any]] = DEFAULT_MEMBERS, **shared: Any):
        super().__init__()
        if not isinstance(members, (list, tuple)) or not 2 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"members must be a list of at least two and at most {MAX_MEMBERS} "
                             "{arch, model_kwargs} tables")
        specs = [_member_spec(m, i) for i, m in enumerate(members)]
        # ``shared`` arguments go to every member; a member's own model_kwargs win.
        self.members = nn.ModuleList(create_model(arch, num_classes, **{**shared, **kwargs})
                                     for arch, kwargs in specs)
        self.regions = union_regions(m.regions for m in self.members)
        # Each member's region weights placed in the ensemble's columns by a 0/1 matrix (a product,
        # which every export format takes); not a weight: outside the state dict.
        for i, m in enumerate(self.members):
            place = torch.zeros(len(m.regions), len(self.regions))
            place[range(len(m.regions)), [self.regions.index(r) for r in m.regions]] = 1.0
            self.register_buffer(f"_place{i}", place, persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        log_probs, weights = [], None
        for i, member in enumerate(self.members):
            out = member({r: batch[r] for r in member.regions})
            log_probs.append(out.logits.float().log_softmax(1))
            spread = out.region_weights.float() @ getattr(self, f"_place{i}")
            weights = spread if weights is None else weights + spread
        n = len(self.members)
        # log of the mean probability, computed stably (no log of a probability that underflowed to 0)
        logits = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(n)
        return Output(logits, weights / n)


def union_regions(member_regions: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The regions an ensemble reads: every member's, in the order they first appear."""
    return tuple(dict.fromkeys(r for regions in member_regions for r in regions))


def _member_spec(member: Any, index: int) -> tuple[str, dict[str, Any]]:
    """(arch, model_kwargs) of one member table; a ValueError naming what is wrong."""
    if not isinstance(member, dict) or set(member) - {"arch", "model_kwargs"} or not isinstance(
            member.get("arch"), str):
        raise ValueError(f"member {index} must be a table with arch (a network's name) and optionally "
                         f"model_kwargs, got {str(member)[:80]}")
    kwargs = member.get("model_kwargs", {})
    if member["arch"] == "ensemble" or not isinstance(kwargs, dict):
        raise ValueError(f"member {index}: an ensemble's members are single networks with a table of arguments")
    return member["arch"], kwargs


@register_model
def ensemble(num_classes: int, **kw) -> EnsembleNet:
    """Several networks' class probabilities averaged (members: [{arch, model_kwargs}, ...])."""
    return EnsembleNet(num_classes, **kw)
