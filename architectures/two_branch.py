"""Two-branch prior-attention networks over the eye-and-eyebrow and mouth blocks.

One small conv branch per facial region turns its block into a feature vector; the regions are
fused by a learned attention that scores each region's features and takes a softmax over the
regions, so every sample gets its own weight per region (returned with the logits). Variants:

* ``two-branch``: eyes + mouth, attention fusion (the default network).
* ``two-branch-face``: eyes + mouth + a small whole-face context branch as a third region.
* ``two-branch-concat``: eyes + mouth concatenated, no learned attention (the original
  prior-attention design); it reports uniform region weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from architectures.layers import ConvBranch
from architectures.registry import Output, register_model


class RegionAttention(nn.Module):
    """Scores each region's feature vector and normalises the scores over regions (softmax).

    Each region has its own scoring projection because eyes and mouth features live in different
    learned spaces; a shared query vector then makes the scores comparable.
    """

    def __init__(self, n_regions: int, dim: int, hidden: int = 64):
        super().__init__()
        self.keys = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(n_regions))
        self.query = nn.Linear(hidden, 1, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.cat([self.query(torch.tanh(k(f))) for k, f in zip(self.keys, feats)], dim=1)
        weights = scores.softmax(dim=1)  # (B, R)
        fused = (torch.stack(feats, dim=1) * weights.unsqueeze(-1)).sum(dim=1)
        return fused, weights


class TwoBranchNet(nn.Module):
    """One ConvBranch per region, fused by region attention (or plain concatenation), then a classifier."""

    def __init__(self, num_classes: int, regions: Sequence[str] = ("eyes", "mouth"),
                 fusion: str = "attention", widths: Sequence[int] = (16, 48, 96, 192),
                 context_widths: Sequence[int] = (16, 32, 64, 96), feat_dim: int = 128,
                 dropout: float = 0.3, branch_dropout: float = 0.1):
        super().__init__()
        if fusion not in ("attention", "concat"):
            raise ValueError(f"fusion must be 'attention' or 'concat', got {fusion!r}")
        self.regions = tuple(regions)
        self.fusion = fusion
        # The whole face is context only: a narrower branch keeps the focus on the prior regions.
        self.branches = nn.ModuleDict({
            r: ConvBranch(context_widths if r == "face" else widths, feat_dim, dropout=branch_dropout)
            for r in self.regions})
        n = len(self.regions)
        if fusion == "attention":
            self.attention = RegionAttention(n, feat_dim)
            head_in = feat_dim
        else:
            self.attention = None
            head_in = n * feat_dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_in, num_classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        feats = [self.branches[r](batch[r]) for r in self.regions]
        if self.attention is not None:
            fused, weights = self.attention(feats)
        else:
            fused = torch.cat(feats, dim=1)
            b = fused.shape[0]
            weights = fused.new_full((b, len(self.regions)), 1.0 / len(self.regions))
        return Output(self.head(fused), weights)


@register_model
def two_branch(num_classes: int, **kw) -> TwoBranchNet:
    """Eyes-and-eyebrows + mouth branches fused by learned region attention."""
    return TwoBranchNet(num_classes, regions=("eyes", "mouth"), fusion="attention", **kw)


@register_model
def two_branch_face(num_classes: int, **kw) -> TwoBranchNet:
    """``two-branch`` plus a small whole-face context branch as a third attended region."""
    return TwoBranchNet(num_classes, regions=("eyes", "mouth", "face"), fusion="attention", **kw)


@register_model
def two_branch_concat(num_classes: int, **kw) -> TwoBranchNet:
    """The original prior-attention design: both branches concatenated, no learned attention."""
    return TwoBranchNet(num_classes, regions=("eyes", "mouth"), fusion="concat", **kw)
