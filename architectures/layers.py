"""Building blocks shared by the networks: a small conv branch for one image block."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class ConvBranch(nn.Module):
    """A VGG-style branch for one grayscale block of any size: stem, stages, adaptive pooling.

    The stem runs at full resolution with few channels (cheap on CPU); each stage halves the
    resolution first so that the wide convolutions run on small maps. Adaptive pooling makes the
    branch independent of the block size stored in the shards.
    """

    def __init__(self, widths: Sequence[int] = (16, 48, 96, 192), feat_dim: int = 128,
                 convs_per_stage: int = 2, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(1, widths[0])]
        c = widths[0]
        for w in widths[1:]:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for k in range(convs_per_stage):
                layers.append(conv_bn_relu(c if k == 0 else w, w))
            c = w
        self.features = nn.Sequential(*layers)
        # Average and max pooling together keep both "how much" and "where strongest" evidence.
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.max = nn.AdaptiveMaxPool2d(1)
        self.proj = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * c, feat_dim),
                                  nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True))
        self.out_dim = feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.proj(torch.cat([self.avg(x), self.max(x)], dim=1))
