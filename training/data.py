"""Torch data over faceblocks shards: a Dataset on ShardReader, batch augmentation, samplers.

Samples are fetched a batch at a time (``__getitems__``) and stay uint8 until they reach the
training loop, where augmentation and normalisation run as torch ops on whole batches: far cheaper
on CPU than per-sample transforms in workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from prepro.shards import Manifest, ShardError, ShardReader
from training.errors import ConfigError, EmptySplitError

# Fixed normalisation of uint8 blocks (stored in checkpoints): x / 255 -> (x - MEAN) / STD.
NORM_MEAN = 0.5
NORM_STD = 0.25
REGIONS = ("eyes", "mouth", "face")


class BlockDataset(Dataset):
    """The labelled samples of one split, with labels indexed into ``class_names``.

    ``class_names=None`` keeps every label present in the split (in the shards' label order);
    otherwise only samples whose label name is in ``class_names`` are kept, re-indexed to its order,
    and the others are counted in ``n_excluded``. Unlabelled samples are counted in ``n_unlabelled``.
    """

    def __init__(self, shards_dir: str | os.PathLike, split: str, class_names: Sequence[str] | None = None,
                 regions: Sequence[str] = REGIONS, cache: bool = False):
        bad = [r for r in regions if r not in REGIONS]
        if bad:
            raise ConfigError(f"unknown region(s) {', '.join(bad)}; allowed: {', '.join(REGIONS)}")
        self.reader = ShardReader(shards_dir, split=split)
        names = list(self.reader.label_names)
        raw = self.reader.labels  # index into the shards' label_names, -1 when unlabelled
        if class_names is None:
            present = set(int(i) for i in np.unique(raw[raw >= 0]))
            class_names = [n for i, n in enumerate(names) if i in present]
        self.class_names = list(class_names)
        remap = np.full(len(names) + 1, -1, dtype=np.int64)  # last slot maps label -1
        for i, n in enumerate(names):
            if n in self.class_names:
                remap[i] = self.class_names.index(n)
        targets = remap[raw]
        keep = targets >= 0
        self.n_unlabelled = int((raw < 0).sum())
        self.n_excluded = int(((raw >= 0) & ~keep).sum())
        lab, cnt = np.unique(raw[(raw >= 0) & ~keep], return_counts=True)
        self.excluded_by_label = {names[int(i)]: int(c) for i, c in zip(lab, cnt)}
        self.rows = np.flatnonzero(keep)
        self.targets = targets[keep]
        self.split = split
        self.shards_dir = str(shards_dir)
        self.regions = tuple(regions)
        self.block_sizes = {r: tuple(int(v) for v in self.reader.block_sizes[r]) for r in REGIONS
                            if r in self.reader.block_sizes}
        self.manifest: Manifest = self.reader.manifest
        if len(self.rows) == 0:
            wanted = ", ".join(self.class_names) if self.class_names else "any label"
            raise EmptySplitError(
                f"split {split!r} of {shards_dir} holds no labelled samples of {wanted}: pick another "
                f"split or preprocess with a {split} fraction (e.g. --val-frac 0.1)")
        self._cache: dict[str, np.ndarray] | None = None
        if cache:
            try:
                data = self.reader.load_all(fields=self.regions)
            except (OSError, KeyError) as e:
                raise ShardError(f"a {split} shard of {shards_dir} is damaged ({e}): run `faceblocks verify "
                                 f"{shards_dir}`") from e
            self._cache = {r: data[r][self.rows] for r in self.regions}
            self.reader.close()

    def __len__(self) -> int:
        return len(self.rows)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=len(self.class_names))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch: uint8 (B, 1, H, W) per region, int64 ``label`` and ``index`` (B,)."""
        idx = np.asarray(indices, dtype=np.int64)
        out: dict[str, torch.Tensor] = {}
        if self._cache is not None:
            for r in self.regions:
                out[r] = torch.from_numpy(self._cache[r][idx]).unsqueeze(1)
        else:
            try:
                samples = [self.reader.get(int(self.rows[i]), fields=self.regions) for i in idx]
            except (OSError, KeyError) as e:
                raise ShardError(f"a {self.split} shard of {self.shards_dir} is damaged ({e}): run "
                                 f"`faceblocks verify {self.shards_dir}`") from e
            for r in self.regions:
                out[r] = torch.from_numpy(np.stack([s[r] for s in samples])).unsqueeze(1)
        out["label"] = torch.from_numpy(self.targets[idx])
        out["index"] = torch.from_numpy(idx)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def passthrough_collate(batch):
    """``__getitems__`` already returns a collated batch."""
    return batch


# ----------------------------------------------------------------------------------------------
# Samplers


class BalancedDistributedSampler(Sampler[int]):
    """Class-balanced draw with replacement (each class equally likely), split across processes.

    Every process draws the same epoch-seeded sequence and takes every ``world``-th element, so the
    processes see disjoint parts of one draw, like DistributedSampler does for a permutation.
    """

    def __init__(self, targets: np.ndarray, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        counts = np.bincount(targets)
        w = 1.0 / counts[targets]
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.double)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(len(targets) / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.num_samples * self.num_replicas, replacement=True, generator=g)
        return iter(idx[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def class_weights(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """Loss weights from class counts: ``inverse`` frequency or its ``sqrt``, mean 1; None for ``none``."""
    if mode == "none":
        return None
    c = np.maximum(counts.astype(np.float64), 1.0)
    w = 1.0 / c if mode == "inverse" else 1.0 / np.sqrt(c)
    w = w / (w * counts).sum() * counts.sum()  # mean weight over the samples is 1
    return torch.tensor(w, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Augmentation and normalisation (torch ops on whole batches)


@dataclass
class AugmentConfig:
    """Ranges of the random transforms; the defaults are mild because blocks are tightly cropped."""

    flip_p: float = 0.5  # probability of mirroring the whole face (every block of a sample together)
    max_shift: float = 0.06  # max translation, fraction of the block size, per block
    max_scale: float = 0.08  # zoom in [1 - s, 1 + s], per block
    max_rotate: float = 8.0  # rotation in degrees, per block
    brightness: float = 0.15  # added offset in [-b, b] (intensity range 0..1), per sample
    contrast: float = 0.2  # contrast factor in [1 - c, 1 + c], per sample


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def augment(batch: dict[str, torch.Tensor], regions: Sequence[str], g: torch.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """Randomly transform float blocks in [0, 1]; every random draw comes from ``g`` (repeatable).

    A flip mirrors every block of a sample: mirroring a face swaps left and right, so the eyes
    block is mirrored as a whole (brows and eyes change sides, as in a mirrored face).
    Lighting changes are shared by the blocks of a sample, since they come from one photo.
    """
    ref = batch[regions[0]]
    b, dev = ref.shape[0], ref.device
    # Draws happen on the CPU generator (repeatable everywhere), then move to the blocks' device.
    flip = (torch.rand(b, generator=g) < cfg.flip_p).to(dev)
    offset = _uniform(b, -cfg.brightness, cfg.brightness, g).view(b, 1, 1, 1).to(dev)
    gain = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, g).view(b, 1, 1, 1).to(dev)
    out = dict(batch)
    for r in regions:
        x = batch[r]
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        h, w = x.shape[-2:]
        angle = torch.deg2rad(_uniform(b, -cfg.max_rotate, cfg.max_rotate, g))
        scale = _uniform(b, 1 - cfg.max_scale, 1 + cfg.max_scale, g)
        tx = _uniform(b, -cfg.max_shift, cfg.max_shift, g) * 2  # normalised coordinates span 2
        ty = _uniform(b, -cfg.max_shift, cfg.max_shift, g) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # A pixel-space rotation in normalised coordinates of a non-square block needs the aspect terms.
        theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1),
                             torch.stack([sin * w / h, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(device=dev, dtype=x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out[r] = ((x - mean) * gain + mean + offset).clamp_(0.0, 1.0)
    return out


def to_float(batch: dict[str, torch.Tensor], regions: Sequence[str], device: torch.device,
             memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, torch.Tensor]:
    """uint8 blocks to float in [0, 1] on ``device``."""
    return {r: batch[r].to(device, non_blocking=True).float().div_(255.0).contiguous(memory_format=memory_format)
            for r in regions}


def normalize(batch: dict[str, torch.Tensor], regions: Sequence[str]) -> dict[str, torch.Tensor]:
    return {r: (batch[r] - NORM_MEAN) / NORM_STD for r in regions}


def flip_batch(batch: dict[str, torch.Tensor], regions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Mirror every block (test-time augmentation)."""
    return {r: batch[r].flip(-1) for r in regions}
