"""Tiny synthetic shard folders in the real faceblocks format, with learnable class patterns.

Each class draws a horizontal bar at its own height in the eyes block (like raised or lowered
brows) and a blob of its own width in the mouth block (like an open or closed mouth), plus noise;
the face block holds both. A small network separates the classes in a few epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from prepro.blocks import BlockConfig
from prepro.config import PreprocessConfig
from prepro.shards import SHARD_DIR, Manifest, Sample, ShardRecord, shard_attrs, write_shard

ALL_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]


def _blocks(label: int, n_classes: int, sizes: dict[str, tuple[int, int]], rng: np.random.Generator):
    eh, ew = sizes["eyes"]
    mh, mw = sizes["mouth"]
    fh, fw = sizes["face"]
    frac = (label + 0.5) / n_classes
    eyes = rng.normal(90, 20, (eh, ew))
    row = int(frac * (eh - 4)) + rng.integers(-1, 2)
    eyes[max(row, 0):max(row, 0) + 3, :] += 110  # the class's "brow height"
    mouth = rng.normal(90, 20, (mh, mw))
    half = max(1, int(frac * mw / 2))
    mouth[mh // 2 - 2:mh // 2 + 2, mw // 2 - half:mw // 2 + half] += 110  # the class's "mouth width"
    face = rng.normal(90, 20, (fh, fw))
    frow = int(frac * (fh // 2 - 4))
    face[frow:frow + 3, :] += 110
    clip = lambda a: np.clip(a, 0, 255).astype(np.uint8)  # noqa: E731
    return clip(eyes), clip(mouth), clip(face)


def _votes(labels: Sequence[str], cls: int, share: float) -> np.ndarray:
    from prepro.sample_values import VOTE_COLUMNS

    v = np.zeros(len(VOTE_COLUMNS), np.float32)
    v[VOTE_COLUMNS.index(labels[cls])] = round(10 * share)
    v[VOTE_COLUMNS.index(labels[(cls + 1) % len(labels)])] += 10 - round(10 * share)
    return v


def make_fake_shards(root: str | Path, labels: Sequence[str] = ("happy", "sad", "surprise"),
                     per_class: dict[str, int] | None = None, eyes_size: tuple[int, int] = (16, 48),
                     mouth_size: tuple[int, int] = (16, 32), face_size: tuple[int, int] = (32, 32),
                     shard_size: int = 32, label_names: Sequence[str] = ALL_LABELS, unlabelled: int = 0,
                     seed: int = 0, quality: float = 1.0, votes: float | None = None) -> Path:
    """Write a shard folder with ``per_class[split]`` samples of each label in ``labels`` per split.

    ``label_names`` is the manifest's label list (the preprocessing pipeline stores all canonical
    labels); ``unlabelled`` adds that many label -1 samples to the test split; ``votes`` (a share) gives
    every sample ten FER+-like votes: that share for its label, the rest for the next of ``labels``
    (below one half the votes disagree with the label). Returns ``root``.
    """
    root = Path(root)
    (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    per_class = per_class or {"train": 24, "val": 8, "test": 8}
    sizes = {"eyes": tuple(eyes_size), "mouth": tuple(mouth_size), "face": tuple(face_size)}
    rng = np.random.default_rng(seed)
    split_names = ["train", "val", "test"]
    manifest = _fake_manifest(label_names, split_names, sizes)
    item = 0
    for split in split_names:
        samples = _fake_samples(split, split_names, labels, label_names, per_class, unlabelled, sizes, rng,
                                item, quality, votes)
        for i in range(0, len(samples), shard_size):
            chunk = samples[i:i + shard_size]
            index = i // shard_size
            rel = f"{SHARD_DIR}/{split}-{index:05d}.h5"
            digest = write_shard(root / rel, chunk, shard_attrs(manifest, split, index), manifest.writer_id)
            manifest.shards.append(ShardRecord(file=rel, split=split, n_samples=len(chunk), sha256=digest))
            item += len(chunk)
    manifest.source["n_items"] = item
    manifest.complete = True
    manifest.save(root)
    return root


def _fake_manifest(label_names: Sequence[str], split_names: list[str],
                   sizes: dict[str, tuple[int, int]]) -> Manifest:
    """The manifest of a finished preprocessing run with these block sizes (no shards yet)."""
    # The parameters of a real run with these block sizes: training, evaluate and predict read them.
    params = PreprocessConfig(face="aligned", blocks=BlockConfig(eyes_size=sizes["eyes"],
                                                                 mouth_size=sizes["mouth"],
                                                                 face_size=sizes["face"])).to_dict()
    return Manifest(
        params=params, source={"path": "shardfakes", "format": "synthetic", "dataset": None, "n_items": 0,
                               "fingerprint": ""},
        label_names=list(label_names), split_names=split_names,
        box_methods=["hog", "cnn", "estimated", "estimated_fallback", "given"],
        block_sizes={k: list(v) for k, v in sizes.items()},
        landmark_model={"file": "none", "sha256": "0" * 64, "terms": "synthetic"},
        writer_id="0123456789abcdef")


def _fake_samples(split: str, split_names: list[str], labels: Sequence[str], label_names: Sequence[str],
                  per_class: dict[str, int], unlabelled: int, sizes: dict[str, tuple[int, int]],
                  rng: np.random.Generator, first_item: int, quality: float, votes: float | None) -> list[Sample]:
    """One split's samples in a random order; ``unlabelled`` label -1 samples are added to the test split."""
    items: list[int] = []
    for lab in labels:
        items += [list(label_names).index(lab)] * per_class.get(split, 0)
    if split == "test":
        items += [-1] * unlabelled
    samples = []
    for k in rng.permutation(len(items)):
        lab = items[k]
        cls = list(labels).index(label_names[lab]) if lab >= 0 else int(rng.integers(len(labels)))
        eyes, mouth, face = _blocks(cls, len(labels), sizes, rng)
        samples.append(Sample(eyes=eyes, mouth=mouth, face=face, landmarks=np.zeros((68, 2), np.float32),
                              box=(0.0, 0.0, 48.0, 48.0), eyes_affine=np.eye(2, 3, dtype=np.float32),
                              mouth_affine=np.eye(2, 3, dtype=np.float32),
                              face_affine=np.eye(2, 3, dtype=np.float32), label=lab,
                              split=split_names.index(split), source=f"fake/{split}/{first_item + len(samples)}",
                              subject="", box_method=2, det_score=float("nan"), quality=quality,
                              image_size=(48, 48)))
        if votes is not None:
            samples[-1].values["votes"] = _votes(labels, cls, votes)
    return samples


def edit_shards(root: str | Path, edit: Callable[[Any, int], None]) -> Path:
    """Change the shards of ``root`` in place, ``edit(h5 file, index of its first sample)`` per shard
    in folder order, and record the new checksums in the manifest, as if faceblocks had written
    them so (a changed shard whose manifest was not updated is damaged). Returns ``root``."""
    import dataclasses

    import h5py

    from prepro.outputs import sha256_file

    root = Path(root)
    m = Manifest.load(root)
    k = 0
    for i, rec in enumerate(m.shards):
        with h5py.File(root / rec.file, "r+") as f:
            edit(f, k)
        k += rec.n_samples
        m.shards[i] = dataclasses.replace(rec, sha256=sha256_file(root / rec.file))
    m.save(root)
    return root


def damage_block_data(path: str | Path) -> None:
    """Flip one byte inside the first stored eyes block of shard ``path``: the file stays readable
    HDF5 with its attributes (so faceblocks can tell it is its own) but no longer matches its checksum."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f["eyes"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
