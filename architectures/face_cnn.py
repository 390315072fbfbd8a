"""Whole-face CNN baseline: one conv branch on the aligned face block, same parameter budget."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from architectures.layers import ConvBranch
from architectures.registry import Output, register_model


class FaceCNN(nn.Module):
    """A single ConvBranch over the ``face`` block and a linear classifier; region weight is 1."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 48, 96, 256), feat_dim: int = 256,
                 dropout: float = 0.3, branch_dropout: float = 0.1):
        super().__init__()
        self.regions = ("face",)
        self.branch = ConvBranch(widths, feat_dim, dropout=branch_dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat_dim, num_classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        x = batch["face"]
        return Output(self.head(self.branch(x)), x.new_ones((x.shape[0], 1)))


@register_model
def face_cnn(num_classes: int, **kw) -> FaceCNN:
    """Whole-face CNN baseline on the ``face`` block."""
    return FaceCNN(num_classes, **kw)
