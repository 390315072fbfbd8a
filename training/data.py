"""Torch data over faceblocks shards: the samples of a split, batches, augmentation.

A split's samples are selected once (`SplitSamples`: labels re-indexed to the model's classes,
a holdout carved out, low-quality samples left out) and then served in one of two ways:

* **cached** (the default): every block of the split held as uint8 tensors, on the training
  device (a GPU holds FER2013 in ~300 MB); a batch is an index into them, so no loader, collate
  or host-to-device copy runs per step;
* **lazy**: a DataLoader over the HDF5 shards (``num_workers`` processes), for sets that do not
  fit in memory.

Blocks stay uint8 until they reach the step, where augmentation and normalisation run as torch
ops on whole batches, on the batch's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prepro.errors import EmptySplitError, InputError
from prepro.sample_values import VOTE_COLUMNS, drop_single_votes
from prepro.shards import ShardReader

# Fixed normalisation of uint8 blocks (stored in checkpoints): x / 255 -> (x - MEAN) / STD.
NORM_MEAN = 0.5
NORM_STD = 0.25
REGIONS = ("eyes", "mouth", "face")


def holdout_rows(targets: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """A stratified, seeded choice of about ``frac`` of the positions of ``targets`` (at least one
    per class with two or more samples): the holdout validation part of a training split."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        k = min(len(idx) - 1, max(1, round(len(idx) * frac))) if len(idx) > 1 else 0
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


class SplitSamples:
    """The labelled samples of one split, labels indexed into ``class_names``.

    ``class_names=None`` keeps every label present in the split (in the shards' label order);
    otherwise only samples whose label is in ``class_names`` are kept and re-indexed, and the
    others counted in ``n_excluded``. Unlabelled samples are counted in ``n_unlabelled``.
    ``keep`` (positions among the labelled samples) narrows the selection further.
    """

    def __init__(self, shards_dir: str, split: str, class_names: Sequence[str] | None = None,
                 regions: Sequence[str] = REGIONS, soft_labels: bool = False):
        bad = [r for r in regions if r not in REGIONS]
        if bad:
            raise InputError(f"unknown region(s) {', '.join(bad)}; allowed: {', '.join(REGIONS)}")
        self.reader = ShardReader(shards_dir, split=split)
        names = list(self.reader.label_names)
        raw = self.reader.labels  # index into the shards' label_names, -1 when unlabelled
        if class_names is None:
            present = {int(i) for i in np.unique(raw[raw >= 0])}
            class_names = [n for i, n in enumerate(names) if i in present]
        self.class_names = list(class_names)
        remap = np.full(len(names) + 1, -1, dtype=np.int64)  # the last slot maps label -1
        for i, n in enumerate(names):
            if n in self.class_names:
                remap[i] = self.class_names.index(n)
        targets = remap[raw]
        keep = targets >= 0
        self.n_unlabelled = int((raw < 0).sum())
        self.n_excluded = int(((raw >= 0) & ~keep).sum())
        lab, cnt = np.unique(raw[(raw >= 0) & ~keep], return_counts=True)
        self.excluded_by_label = {names[int(i)]: int(c) for i, c in zip(lab, cnt)}
        self.rows = np.flatnonzero(keep)  # positions in the reader
        self.targets = targets[keep]
        self.split, self.shards_dir, self.regions = split, str(shards_dir), tuple(regions)
        self.block_sizes = {r: tuple(int(v) for v in self.reader.block_sizes[r]) for r in REGIONS
                            if r in self.reader.block_sizes}
        self.manifest = self.reader.manifest
        self.soft_labels = soft_labels
        if soft_labels and "votes" not in self.reader.optional_fields:
            raise InputError(f"soft labels need the taggers' votes, and the {split} shards of {shards_dir} hold none: "
                             "preprocess FER+ (--dataset ferplus), or train on the labels without --soft-labels")

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, positions: np.ndarray) -> "SplitSamples":
        """Keep only ``positions`` (indices into the current samples)."""
        self.rows, self.targets = self.rows[positions], self.targets[positions]
        return self

    def same_samples(self, regions: Sequence[str]) -> "SplitSamples":
        """The same selected samples, read for ``regions`` (another model's inputs)."""
        other = SplitSamples(self.shards_dir, self.split, class_names=self.class_names, regions=regions)
        other.rows, other.targets = self.rows.copy(), self.targets.copy()
        return other

    def quality(self) -> np.ndarray:
        return self.reader.load_all(fields=("quality",))["quality"][self.rows].astype(np.float64)

    def require_samples(self, what: str) -> None:
        if len(self.rows) == 0:
            wanted = ", ".join(self.class_names) if self.class_names else "any label"
            raise EmptySplitError(f"{what} of {self.shards_dir} holds no labelled samples of {wanted}: pick another "
                                  f"split" + (f", or preprocess with a {self.split} fraction (e.g. --{self.split}-frac 0.1; "
                                  "sources that come with their own splits keep them)" if self.split in ("val", "test")
                                  else ""))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=len(self.class_names))

    def load(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Every block of the selection as uint8 (N, 1, H, W) tensors on ``device``, plus ``label``."""
        data = self.reader.load_all(fields=self.regions)
        self.reader.close()
        out = {r: torch.from_numpy(np.ascontiguousarray(data[r][self.rows])).unsqueeze(1).to(device)
               for r in self.regions}
        out["label"] = torch.from_numpy(self.targets).to(device)
        if self.soft_labels:
            out["soft"] = torch.from_numpy(self.vote_distribution()).to(device)
        return out

    def vote_distribution(self, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 (N, classes): each selected sample's votes for the classes trained on (single
        votes dropped), summing to 1; the majority label's votes are always among them."""
        rows = self.rows if rows is None else rows
        votes = drop_single_votes(self.reader.load_all(fields=("votes",))["votes"][rows])
        votes = votes[:, [VOTE_COLUMNS.index(n) for n in self.class_names]]
        return (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)

    def read_batch(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """One batch read from the shards (the lazy path): uint8 (B, 1, H, W) per region, ``label``."""
        idx = np.asarray(positions, dtype=np.int64)
        samples = [self.reader.get(int(self.rows[i]), fields=self.regions) for i in idx]
        out = {r: torch.from_numpy(np.stack([s[r] for s in samples])).unsqueeze(1) for r in self.regions}
        out["label"] = torch.from_numpy(self.targets[idx])
        if self.soft_labels:
            out["soft"] = torch.from_numpy(self.vote_distribution(self.rows[idx]))
        return out


@dataclass
class Batches:
    """Serves a split as batches of uint8 blocks: from memory (cached) or from the shards (lazy)."""

    samples: SplitSamples
    cached: dict[str, torch.Tensor] | None  # from `SplitSamples.load`, or None for the lazy path
    batch_size: int
    rank: int = 0
    world: int = 1

    def __len__(self) -> int:
        return len(self.samples)

    def epoch_order(self, seed: int, balanced: bool) -> np.ndarray:
        """This process's positions for one epoch: a seeded permutation (or a class-balanced draw
        with replacement), split across processes like DistributedSampler does."""
        n = len(self.samples)
        g = torch.Generator().manual_seed(seed)
        if balanced:
            counts = np.bincount(self.samples.targets)
            w = torch.as_tensor(1.0 / counts[self.samples.targets], dtype=torch.double)
            order = torch.multinomial(w, n, replacement=True, generator=g).numpy()
        else:
            order = torch.randperm(n, generator=g).numpy()
        per = math.ceil(n / self.world)
        order = np.resize(order, per * self.world)  # every process gets the same number of steps
        return order[self.rank::self.world]

    def iterate(self, order: np.ndarray, drop_last: bool) -> Iterator[dict[str, torch.Tensor]]:
        """Batches over ``order``; the last short batch is dropped when ``drop_last`` and it is not the only one."""
        n = len(order)
        stop = n - n % self.batch_size if drop_last and n > self.batch_size else n
        for a in range(0, stop, self.batch_size):
            idx = order[a:a + self.batch_size]
            if self.cached is None:
                yield self.samples.read_batch(idx)
            else:
                t = torch.as_tensor(idx, device=self.cached["label"].device)
                yield {k: v.index_select(0, t) for k, v in self.cached.items()}

    def steps(self, order_len: int, drop_last: bool) -> int:
        return order_len // self.batch_size if drop_last and order_len > self.batch_size else \
            math.ceil(order_len / self.batch_size)


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
    return torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo


def augment(batch: dict[str, torch.Tensor], regions: Sequence[str], g: torch.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """Randomly transform float blocks in [0, 1]; every random draw comes from ``g`` (repeatable;
    a generator on the blocks' device keeps a GPU step free of host round trips).

    A flip mirrors every block of a sample: mirroring a face swaps left and right, so the eyes
    block is mirrored as a whole (brows and eyes change sides, as in a mirrored face).
    Lighting changes are shared by the blocks of a sample, since they come from one photo.
    """
    ref = batch[regions[0]]
    b, dev = ref.shape[0], ref.device
    flip = (torch.rand(b, generator=g, device=g.device) < cfg.flip_p).to(dev)
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


ERASE_AREA = (0.02, 0.25)  # share of a block one erased rectangle covers
ERASE_LOG_ASPECT = math.log(3.0)  # its height:width ratio lies in [1/3, 3]


def erase(batch: dict[str, torch.Tensor], regions: Sequence[str], p: float, g: torch.Generator
          ) -> dict[str, torch.Tensor]:
    """Random erasing: with probability ``p``, each block of each sample gets one random rectangle
    set to the normalisation mean (0 once normalised), so no single patch of a region can carry a
    decision alone; the blocks of a sample are erased independently, each region its own evidence."""
    out = dict(batch)
    for r in regions:
        x = batch[r]
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        area = _uniform(b, *ERASE_AREA, g) * h * w
        aspect = torch.exp(_uniform(b, -ERASE_LOG_ASPECT, ERASE_LOG_ASPECT, g))
        eh = (area * aspect).sqrt().round().clamp(1, h)
        ew = (area / aspect).sqrt().round().clamp(1, w)
        top = (torch.rand(b, generator=g, device=g.device) * (h - eh + 1)).floor()
        left = (torch.rand(b, generator=g, device=g.device) * (w - ew + 1)).floor()
        chosen = torch.rand(b, generator=g, device=g.device) < p
        rows = torch.arange(h, device=g.device).view(1, h, 1)
        cols = torch.arange(w, device=g.device).view(1, 1, w)
        inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
                  & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & chosen.view(b, 1, 1))
        out[r] = x.masked_fill(inside.unsqueeze(1).to(x.device), NORM_MEAN)
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
