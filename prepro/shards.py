"""The faceblocks shard format: HDF5 shards of blocks plus a JSON manifest.

An output folder looks like::

    OUT/manifest.json            parameters, source fingerprint, one entry per segment, failures
    OUT/shards/train-00000.h5    a fixed number of samples of one split (the last one of a split may be short)
    OUT/shards/val-00000.h5 ...

Each shard holds, per sample (first axis N): ``eyes``, ``mouth``, ``face`` (uint8 grayscale blocks),
``landmarks`` (float32 68x2, original-image pixels), ``box`` (float32 left, top, right, bottom in
original-image pixels, right/bottom exclusive), ``eyes_affine``/``mouth_affine``/``face_affine``
(float32 2x3, original-image pixels to block pixels), ``label`` (int8 index into ``label_names``,
-1 when unlabelled), ``split`` (uint8 index into ``split_names``), ``source`` and ``subject``
(UTF-8 strings), ``box_method`` (uint8 index into ``box_methods``), ``det_score`` (float32, NaN
when the box did not come from the detector), ``quality`` (float32 in [0, 1]) and ``image_size``
(int32 original height, width). Root attributes carry the schema and provenance; dicts and lists are
stored as JSON strings so that any HDF5 reader can decode them.

Shards are written to a temporary name and renamed when complete; the manifest is rewritten
atomically after every shard, so a run killed at any moment resumes from the last finished shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

import numpy as np

from prepro import __version__

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val", "test")

# Per-sample arrays whose trailing shape does not depend on the block sizes.
_FIXED_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "landmarks": ("float32", (68, 2)),
    "box": ("float32", (4,)),
    "eyes_affine": ("float32", (2, 3)),
    "mouth_affine": ("float32", (2, 3)),
    "face_affine": ("float32", (2, 3)),
    "label": ("int8", ()),
    "split": ("uint8", ()),
    "box_method": ("uint8", ()),
    "det_score": ("float32", ()),
    "quality": ("float32", ()),
    "image_size": ("int32", (2,)),
}
BLOCK_FIELDS = ("eyes", "mouth", "face")
STRING_FIELDS = ("source", "subject")


class ShardError(Exception):
    """A shard folder that cannot be used as it is (missing, damaged, another format)."""


BLOCK_DEFLATE_LEVEL = 1  # blocks are photographic: higher levels cost much more for ~2% smaller files


def pack_block(block: np.ndarray) -> bytes:
    """A block as the deflate-compressed bytes of its one-sample HDF5 chunk.

    Workers pack their blocks, so compression runs in parallel and the writer only stores bytes;
    readers see ordinary gzip-filtered datasets.
    """
    return zlib.compress(np.ascontiguousarray(block, dtype=np.uint8).tobytes(), BLOCK_DEFLATE_LEVEL)


@dataclass
class Sample:
    """One processed face: what a worker sends back to the writer."""

    eyes: np.ndarray | bytes  # uint8 (H, W), or its `pack_block` bytes
    mouth: np.ndarray | bytes
    face: np.ndarray | bytes
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    eyes_affine: np.ndarray
    mouth_affine: np.ndarray
    face_affine: np.ndarray
    label: int
    split: int
    source: str
    subject: str
    box_method: int
    det_score: float
    quality: float
    image_size: tuple[int, int]


@dataclass
class Segment:
    """A run of consecutive source items that has been fully accounted for."""

    start: int  # first item index (in the run's deterministic item order)
    end: int  # one past the last item index
    split: str  # split of every item in the segment
    file: str | None  # shard path relative to the output folder; None when every item failed
    n_samples: int  # samples written to the shard
    sha256: str | None  # checksum of the shard file
    failures: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"} per failed item

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def default_file_mode() -> int:
    """The mode a plain ``open`` would give a new file (mkstemp's 0600 would hide results from
    colleagues on a shared machine)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it to ``path``,
    so a reader (or a resumed run) never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.fchmod(fd, default_file_mode())
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), "w")


def write_shard(path: Path, samples: Sequence[Sample], attrs: dict[str, Any]) -> str:
    """Write ``samples`` to ``path`` (via a temporary name) and return the file's SHA-256.

    Chunks hold one sample each so that a random read decompresses only what it needs.
    """
    import h5py

    if not samples:
        raise ValueError("a shard needs at least one sample")
    n = len(samples)
    tmp = path.with_name(path.name + ".tmp")
    sizes = attrs["block_sizes"]
    with h5py.File(tmp, "w", track_order=True) as f:
        for name in BLOCK_FIELDS:
            shape = (n,) + tuple(sizes[name])
            d = f.create_dataset(name, shape=shape, dtype=np.uint8, chunks=(1,) + shape[1:],
                                 compression="gzip", compression_opts=BLOCK_DEFLATE_LEVEL,
                                 track_times=False)
            for i, s in enumerate(samples):
                block = getattr(s, name)
                if not isinstance(block, bytes):
                    if block.shape != shape[1:]:
                        raise ValueError(f"{name} block of sample {i} is {block.shape}, expected {shape[1:]}")
                    block = pack_block(block)
                d.id.write_direct_chunk((i, 0, 0), block)
        for name, (dtype, shape) in _FIXED_FIELDS.items():
            arr = np.asarray([getattr(s, name) for s in samples], dtype=dtype).reshape((n,) + shape)
            chunks = (min(n, 1024),) + shape
            f.create_dataset(name, data=arr, chunks=chunks, compression="gzip", compression_opts=4,
                             track_times=False)
        str_dt = h5py.string_dtype("utf-8")
        for name in STRING_FIELDS:
            f.create_dataset(name, data=[getattr(s, name) for s in samples], dtype=str_dt,
                             track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        f.attrs["n_samples"] = n
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


@dataclass
class Manifest:
    """The output folder's table of contents; the single source of truth for resume and verify."""

    params: dict[str, Any]  # every parameter that changes the output
    source: dict[str, Any]  # path, format, item count and fingerprint of the listing
    label_names: list[str]
    split_names: list[str]
    box_methods: list[str]
    block_sizes: dict[str, list[int]]
    predictor_sha256: str
    n_items: int  # items to account for (listed and not failed at listing time)
    listing_failures: list[dict[str, str]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    faceblocks_version: str = __version__

    @property
    def next_item(self) -> int:
        return self.segments[-1].end if self.segments else 0

    @property
    def complete(self) -> bool:
        return self.next_item >= self.n_items

    @property
    def failures(self) -> list[dict[str, str]]:
        out = list(self.listing_failures)
        for seg in self.segments:
            out.extend(seg.failures)
        return out

    @property
    def n_samples(self) -> int:
        return sum(s.n_samples for s in self.segments)

    def shard_segments(self, split: str | None = None) -> list[Segment]:
        return [s for s in self.segments if s.file and (split is None or s.split == split)]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "segments"}
        d["complete"] = self.complete
        d["n_samples"] = self.n_samples
        d["segments"] = [s.to_dict() for s in self.segments]
        return d

    def save(self, out_dir: Path) -> None:
        atomic_write_text(out_dir / MANIFEST, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Manifest":
        path = Path(out_dir) / MANIFEST
        if not path.is_file():
            raise ShardError(f"{out_dir} holds no {MANIFEST}: not a faceblocks output folder "
                             "(make one with `faceblocks preprocess SOURCE OUT_DIR`)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ShardError(f"{path} is damaged ({e}); rerun `faceblocks preprocess` with --overwrite") from e
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardError(f"{path} has shard format version {version}; this faceblocks "
                             f"({__version__}) reads version {FORMAT_VERSION}: rerun preprocess")
        d.pop("complete", None)
        d.pop("n_samples", None)
        segments = [Segment(**s) for s in d.pop("segments", [])]
        return cls(segments=segments, **d)


def shard_attrs(manifest: Manifest, split: str, index: int) -> dict[str, Any]:
    """Root attributes stored in every shard: enough to use a shard found on its own."""
    return {
        "format_version": manifest.format_version,
        "faceblocks_version": manifest.faceblocks_version,
        "label_names": manifest.label_names,
        "split_names": manifest.split_names,
        "box_methods": manifest.box_methods,
        "block_sizes": manifest.block_sizes,
        "params": manifest.params,
        "predictor_sha256": manifest.predictor_sha256,
        "shard_split": split,
        "shard_index": index,
    }


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class VerifyReport:
    ok: list[str]
    problems: list[str]  # one line per damaged, missing or unexpected shard
    complete: bool

    @property
    def whole(self) -> bool:
        return not self.problems and self.complete


def verify(out_dir: str | os.PathLike) -> VerifyReport:
    """Check every shard against the manifest's checksums and sample counts."""
    import h5py

    out = Path(out_dir)
    m = Manifest.load(out)
    ok, problems = [], []
    listed = set()
    for seg in m.shard_segments():
        listed.add(seg.file)
        path = out / seg.file
        if not path.is_file():
            problems.append(f"{seg.file}: missing")
            continue
        digest = sha256_file(path)
        if digest != seg.sha256:
            problems.append(f"{seg.file}: checksum mismatch (damaged or changed after writing)")
            continue
        try:
            with h5py.File(path, "r") as f:
                n = int(f.attrs["n_samples"])
        except (OSError, KeyError) as e:
            problems.append(f"{seg.file}: unreadable ({e})")
            continue
        if n != seg.n_samples:
            problems.append(f"{seg.file}: holds {n} samples, manifest says {seg.n_samples}")
            continue
        ok.append(seg.file)
    shard_dir = out / SHARD_DIR
    if shard_dir.is_dir():
        for p in sorted(shard_dir.iterdir()):
            rel = f"{SHARD_DIR}/{p.name}"
            if rel not in listed:
                problems.append(f"{rel}: not in the manifest (left by an interrupted run?)")
    return VerifyReport(ok=ok, problems=problems, complete=m.complete)


def summarize(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts per split and label, face-box methods, quality and failures, as a JSON-able dict."""
    import h5py

    out = Path(out_dir)
    m = Manifest.load(out)
    labels_all = m.label_names
    splits: dict[str, dict[str, int]] = {}
    methods: dict[str, int] = {}
    qualities = []
    for seg in m.shard_segments():
        with h5py.File(out / seg.file, "r") as f:
            lab = f["label"][()]
            met = f["box_method"][()]
            qualities.append(f["quality"][()])
        per = splits.setdefault(seg.split, {})
        for idx, count in zip(*np.unique(lab, return_counts=True)):
            name = labels_all[idx] if idx >= 0 else "unlabelled"
            per[name] = per.get(name, 0) + int(count)
        for idx, count in zip(*np.unique(met, return_counts=True)):
            methods[m.box_methods[idx]] = methods.get(m.box_methods[idx], 0) + int(count)
    q = np.concatenate(qualities) if qualities else np.zeros(0, np.float32)
    quality = {}
    if q.size:
        quality = {"min": float(q.min()), "p05": float(np.percentile(q, 5)),
                   "median": float(np.median(q)), "mean": float(q.mean()),
                   "below_0.5": int((q < 0.5).sum())}
    failures = m.failures
    return {
        "out_dir": str(out),
        "complete": m.complete,
        "samples": m.n_samples,
        "failed": len(failures),
        "items": m.n_items + len(m.listing_failures),
        "shards": len(m.shard_segments()),
        "splits": {s: dict(sorted(splits[s].items())) for s in m.split_names if s in splits},
        "box_methods": methods,
        "quality": quality,
        "failures": failures,
        "source": m.source,
        "params": m.params,
        "format_version": m.format_version,
        "faceblocks_version": m.faceblocks_version,
    }


class ShardReader:
    """Random access to the samples of a shard folder, optionally one split and a label subset.

    The index (shard, row) is built once from the small ``label`` arrays; HDF5 files are opened
    lazily and reopened after a fork, so an instance can be handed to DataLoader workers.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str | None = None,
                 labels: Iterable[str] | None = None, verify_files: bool = False):
        import h5py

        self.root = Path(out_dir)
        self.manifest = Manifest.load(self.root)
        m = self.manifest
        if split is not None and split not in m.split_names:
            raise ShardError(f"unknown split {split!r}; allowed: {', '.join(m.split_names)}")
        if labels is not None:
            labels = list(labels)
            bad = [x for x in labels if x not in m.label_names]
            if bad:
                raise ShardError(f"unknown label(s) {', '.join(bad)}; allowed: {', '.join(m.label_names)}")
        self.split = split
        self.label_names = m.label_names
        self.block_sizes = {k: tuple(v) for k, v in m.block_sizes.items()}
        self.files: list[Path] = []
        rows_shard, rows_row, rows_label = [], [], []
        keep = None if labels is None else np.array([m.label_names.index(x) for x in labels])
        for seg in m.shard_segments(split):
            path = self.root / seg.file
            if not path.is_file():
                raise ShardError(f"shard {seg.file} is missing: run `faceblocks verify {self.root}`")
            if verify_files and sha256_file(path) != seg.sha256:
                raise ShardError(f"shard {seg.file} is damaged (checksum mismatch): rerun preprocess")
            try:
                with h5py.File(path, "r") as f:
                    lab = f["label"][()].astype(np.int64)
            except OSError as e:
                raise ShardError(f"shard {seg.file} is unreadable ({e}): run `faceblocks verify {self.root}`") from e
            rows = np.arange(len(lab)) if keep is None else np.flatnonzero(np.isin(lab, keep))
            rows_shard.append(np.full(len(rows), len(self.files), dtype=np.int32))
            rows_row.append(rows.astype(np.int32))
            rows_label.append(lab[rows])
            self.files.append(path)
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if self.files else (lambda xs, dt: np.zeros(0, dt))
        self.index_shard = cat(rows_shard, np.int32)
        self.index_row = cat(rows_row, np.int32)
        self.labels = cat(rows_label, np.int64)
        self._handles: dict[int, Any] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.index_row)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_pid"] = None
        return state

    def _file(self, k: int):
        import h5py

        # h5py handles must not cross a fork: reopen in each worker process.
        if self._pid != os.getpid():
            self._handles = {}
            self._pid = os.getpid()
        h = self._handles.get(k)
        if h is None:
            h = self._handles[k] = h5py.File(self.files[k], "r")
        return h

    def get(self, i: int, fields: Sequence[str] = ("eyes", "mouth", "face", "label")) -> dict[str, Any]:
        """Sample ``i`` of this view as a dict of numpy arrays / scalars / strings."""
        f = self._file(int(self.index_shard[i]))
        r = int(self.index_row[i])
        out = {}
        for name in fields:
            v = f[name][r]
            out[name] = v.decode("utf-8") if isinstance(v, bytes) else v
        return out

    def load_all(self, fields: Sequence[str] = ("eyes", "mouth", "face", "label")) -> dict[str, np.ndarray]:
        """Every sample of this view in memory (for a dataset that fits)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
        for k in range(len(self.files)):
            rows = self.index_row[self.index_shard == k]
            if not len(rows):
                continue
            f = self._file(k)
            for name in fields:
                arr = f[name][()]
                parts[name].append(arr[rows])
        out = {}
        for name in fields:
            if parts[name]:
                out[name] = np.concatenate(parts[name])
            else:
                out[name] = np.zeros((0,), dtype=np.float32)
        return out

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}
