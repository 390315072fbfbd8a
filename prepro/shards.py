"""The faceblocks shard format: HDF5 shards of blocks plus a JSON manifest.

An output folder looks like::

    OUT/manifest.json            parameters, source, the shards with their SHA-256, failure counts
    OUT/failures.jsonl           one JSON line per input that failed in processing (source, reason, split)
    OUT/listing-failures.jsonl   one JSON line per input found unusable when the source was listed
    OUT/shards/train-00000.h5    up to --shard-size samples of one split
    OUT/shards/val-00000.h5 ...

Each shard holds, per sample (first axis N): ``eyes``, ``mouth``, ``face`` (uint8 grayscale blocks),
``landmarks`` (float32 68x2, original-image pixels), ``box`` (float32 left, top, right, bottom in
original-image pixels, right/bottom exclusive), ``eyes_affine``/``mouth_affine``/``face_affine``
(float32 2x3, original-image pixels to block pixels), ``label`` (int8 index into ``label_names``,
-1 when unlabelled), ``split`` (uint8 index into ``split_names``), ``source`` and ``subject``
(UTF-8 strings), ``box_method`` (uint8 index into ``box_methods``), ``det_score`` (float32, NaN
when the box did not come from a detector), ``quality`` (float32 in [0, 1]) and ``image_size``
(int32 original height, width). Root attributes carry the schema and provenance; dicts and lists
are stored as JSON strings so that any HDF5 reader can decode them.

A shard is written under a temporary name and renamed when complete; the manifest is rewritten
atomically after every shard, so a run killed at any moment resumes from the last finished shard.
Every reader checks what it can: the manifest's keys and types, each shard's checksum before its
data are used (`verify_files`), and HDF5 errors become a `DataError` that names the shard.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from prepro.errors import DataError, InputError, OutputError
from prepro.inputs import is_inside, printable
from prepro.manifest import BLOCK_FIELDS, SHARD_DIR, Manifest, ShardRecord
from prepro.outputs import sha256_file, temp_name
from prepro.sample_values import OPTIONAL_FIELDS, arrays_for, held_fields, summary_of, valid_values


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
STRING_FIELDS = ("source", "subject")
_SHARD_ARRAYS = (*BLOCK_FIELDS, *_FIXED_FIELDS, *STRING_FIELDS)  # every member a shard holds
# ... and those only the shards of some sources hold (`prepro.sample_values`: FER+ votes, valence, arousal)
_ALL_ARRAYS = (*_SHARD_ARRAYS, *OPTIONAL_FIELDS)
# What h5py raises for a damaged file: OSError for most, KeyError for a missing member, and
# ValueError, TypeError, AttributeError or RuntimeError for damaged metadata (links, types, B-trees).
HDF5_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError)
BLOCK_DEFLATE_LEVEL = 1  # blocks are photographic: higher levels cost much more for ~2% smaller files


def pack_block(block: np.ndarray) -> bytes:
    """A block as the deflate-compressed bytes of its one-sample HDF5 chunk.

    Workers pack their blocks, so compression runs in parallel and the writer only stores bytes;
    readers see ordinary gzip-filtered datasets.
    """
    import deflate  # libdeflate: a third of zlib's time on these small blocks, the same zlib stream format

    return bytes(deflate.zlib_compress(np.ascontiguousarray(block, dtype=np.uint8).tobytes(), BLOCK_DEFLATE_LEVEL))


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
    # what the source gives beyond the label (`prepro.sample_values`: FER+ votes, valence, arousal)
    values: dict[str, Any] = field(default_factory=dict)


def write_shard(path: Path, samples: Sequence[Sample], attrs: dict[str, Any], writer_id: str) -> str:
    """Write ``samples`` to ``path`` (through a temporary name marked with ``writer_id``) and return
    the file's SHA-256. Chunks hold one sample each so that a random read decompresses only what it
    needs. A failed write (full disk, file-size limit) removes the temporary file: OutputError."""
    import h5py

    if not samples:
        raise ValueError("a shard needs at least one sample")
    tmp = temp_name(path, writer_id)
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            _fill_shard(f, samples, attrs)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        # HDF5 reports a full disk as an OSError, and again as a RuntimeError when the file closes.
        _discard(tmp)
        raise OutputError(f"cannot write {path} ({_write_error_text(e)}): free some space and run "
                          "the same command again to resume") from None
    except BaseException:
        _discard(tmp)
        raise
    return digest


def _discard(tmp: Path) -> None:
    """Remove this writer's temporary file after a failed write. The cleanup must not raise in turn
    (the folder may be gone or a file now): the first error is the one that says what happened."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _write_error_text(e: BaseException) -> str:
    """A short reason for a failed write (HDF5's own messages run to several lines)."""
    text = str(e)
    if getattr(e, "errno", None) == 28 or "errno = 28" in text:
        return "no space left on device"
    if getattr(e, "errno", None):  # HDF5's OSErrors carry the errno under a message of their own
        return os.strerror(e.errno)
    return (getattr(e, "strerror", None) or text.splitlines()[0] if text else type(e).__name__)[:160]


def _fill_shard(f: Any, samples: Sequence[Sample], attrs: dict[str, Any]) -> None:
    import h5py

    n = len(samples)
    sizes = attrs["block_sizes"]
    for name in BLOCK_FIELDS:
        shape = (n,) + tuple(sizes[name])
        d = f.create_dataset(name, shape=shape, dtype=np.uint8, chunks=(1,) + shape[1:], compression="gzip",
                             compression_opts=BLOCK_DEFLATE_LEVEL, track_times=False)
        for i, s in enumerate(samples):
            block = getattr(s, name)
            if not isinstance(block, bytes):
                if block.shape != shape[1:]:
                    raise ValueError(f"{name} block of sample {i} is {block.shape}, expected {shape[1:]}")
                block = pack_block(block)
            d.id.write_direct_chunk((i, 0, 0), block)
    for name, (dtype, shape) in _FIXED_FIELDS.items():
        arr = np.asarray([getattr(s, name) for s in samples], dtype=dtype).reshape((n,) + shape)
        f.create_dataset(name, data=arr, chunks=(min(n, 1024),) + shape, compression="gzip", compression_opts=4,
                         track_times=False)
    str_dt = h5py.string_dtype("utf-8")
    for name in STRING_FIELDS:
        f.create_dataset(name, data=[getattr(s, name) for s in samples], dtype=str_dt, track_times=False)
    table = {s.source: s.values for s in samples if s.values}
    for name, arr in arrays_for([s.source for s in samples], table).items():
        f.create_dataset(name, data=arr, chunks=(min(n, 1024),) + arr.shape[1:], compression="gzip",
                         compression_opts=4, track_times=False)
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
    f.attrs["n_samples"] = n


# ---------------------------------------------------------------------------------------------
# The manifest

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
        "landmark_model": manifest.landmark_model,
        "writer_id": manifest.writer_id,
        "shard_split": split,
        "shard_index": index,
    }


def shard_writer_id(path: Path) -> str | None:
    """The ``writer_id`` attribute of a shard file (None when it has none or cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("writer_id")
    except (OSError, ValueError):
        return None
    return v if isinstance(v, str) else None


# --------------------------------------------------------------------------------------------
# Checking


@dataclass
class VerifyReport:
    ok: list[str]
    problems: list[str]  # one line per damaged or missing shard
    complete: bool
    foreign: list[str] = field(default_factory=list)  # files in shards/ faceblocks did not write (left alone)

    @property
    def whole(self) -> bool:
        return not self.problems and self.complete

    def notes(self, out_dir: str) -> list[str]:
        """The damaged shards, an unfinished run and foreign files, one line each (for standard error)."""
        lines = [f"DAMAGED {p}" for p in self.problems]
        if not self.complete:
            lines.append(f"INCOMPLETE: the run in {out_dir} has not finished; rerun the same preprocess "
                         "command to resume")
        return lines + [f"note: {p} was not written by faceblocks (left alone)" for p in self.foreign]

    def tally(self) -> str:
        return f"{len(self.ok)} shards whole, {len(self.problems)} problems"


def check_shard(out: Path, rec: ShardRecord, manifest: Manifest) -> str | None:
    """Why the shard of ``rec`` cannot be used as it is (None when it is whole): missing, not a
    plain file of the folder, changed since it was written, unreadable, holding links to other data,
    disagreeing with the manifest (sample count, split, labels, block sizes, array shapes and
    dtypes) or holding values no reader can use (a label outside the names, a non-finite number).
    A checksum alone is not enough: a manifest can be edited too, so this checks what readers read."""
    import h5py

    path = out / rec.file
    why = _shard_file_problem(out, path)
    if why:
        return why
    if sha256_file(path) != rec.sha256:
        return "checksum mismatch (damaged or changed after writing)"
    try:
        with h5py.File(path, "r") as f:
            return _member_problem(f) or _disagreement(f, rec, manifest) or _bad_value(f, rec, manifest)
    except HDF5_READ_ERRORS as e:
        return f"unreadable ({str(e)[:100]})"


def _shard_file_problem(out: Path, path: Path) -> str | None:
    """Why ``path`` is no plain file inside ``out`` (None when it is one). Checked before the file
    is opened: a FIFO or a device would block the reader, and a link would read another folder's data."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot be examined ({e.strerror or e})"
    if stat.S_ISLNK(mode):
        return "a symbolic link: shards are read only from their own folder"
    if not stat.S_ISREG(mode):
        return "not a regular file (a folder, FIFO, device or socket)"
    if not is_inside(path, out):
        return f"outside the folder ({SHARD_DIR}/ leads elsewhere): shards are read only from their own folder"
    return None


def _member_problem(f: Any) -> str | None:
    """A member of an open shard that faceblocks never writes: a soft or external link, external
    or virtual storage (data read from other files, FIFOs or devices), an unexpected name, a
    missing array. Looked at through the links themselves, so nothing is followed."""
    import h5py

    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            return f"its member {printable(name)!r} is an HDF5 {type(link).__name__} (data kept elsewhere)"
        if name not in _ALL_ARRAYS:
            return f"it holds a member {printable(name)!r} that faceblocks never writes"
        obj = f[name]
        if not isinstance(obj, h5py.Dataset) or obj.is_virtual or obj.external:
            return f"its {name} array is not stored in the file itself (external or virtual storage)"
    missing = [name for name in _SHARD_ARRAYS if name not in f]
    return f"it lacks its {missing[0]} array" if missing else None


def _attr(f: Any, key: str) -> Any:
    v = f.attrs[key]
    return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v


def _disagreement(f: Any, rec: ShardRecord, m: Manifest) -> str | None:
    """How an open shard disagrees with its manifest record, or None."""
    import h5py

    n = int(f.attrs["n_samples"])
    if n != rec.n_samples:
        return f"holds {n} samples, manifest says {rec.n_samples}"
    for key, want in (("block_sizes", m.block_sizes), ("label_names", m.label_names), ("shard_split", rec.split),
                      ("box_methods", m.box_methods)):
        if _attr(f, key) != want:
            return f"its {key} differ from the manifest's"
    for name in BLOCK_FIELDS:
        if tuple(f[name].shape) != (n, *m.block_sizes[name]) or f[name].dtype != np.uint8:
            return f"its {name} array is {tuple(f[name].shape)} {f[name].dtype}, not {n} blocks of {m.block_sizes[name]}"
    for name, (dtype, shape) in _FIXED_FIELDS.items():
        if tuple(f[name].shape) != (n, *shape) or f[name].dtype != np.dtype(dtype):
            return f"its {name} array is {tuple(f[name].shape)} {f[name].dtype}, not {(n, *shape)} {dtype}"
    for name in STRING_FIELDS:
        if len(f[name]) != n or h5py.check_string_dtype(f[name].dtype) is None:
            return f"its {name} array holds {len(f[name])} {f[name].dtype} entries, not {n} strings"
    for name, (dtype, shape, _) in OPTIONAL_FIELDS.items():
        if name in f and (tuple(f[name].shape) != (n, *shape) or f[name].dtype != np.dtype(dtype)):
            return f"its {name} array is {tuple(f[name].shape)} {f[name].dtype}, not {(n, *shape)} {dtype}"
    return None


# What a reader can use in each per-sample array (beyond its dtype and shape): array, its shard's
# record, the manifest -> a boolean per value; and the words that say what was expected.
_VALID_VALUES: dict[str, tuple[Callable[[np.ndarray, ShardRecord, Manifest], np.ndarray], str]] = {
    "label": (lambda a, r, m: (a >= -1) & (a < len(m.label_names)), "not -1 or an index of the label names"),
    "split": (lambda a, r, m: a == m.split_names.index(r.split), "not the index of the shard's split"),
    "box_method": (lambda a, r, m: a < len(m.box_methods), "not an index of the box methods"),
    "quality": (lambda a, r, m: (a >= 0) & (a <= 1), "not a number in 0..1"),
    "det_score": (lambda a, r, m: ~np.isinf(a), "infinite (NaN stands for no detector score)"),
    "image_size": (lambda a, r, m: a > 0, "not a positive size"),
    **{name: (lambda a, r, m: np.isfinite(a), "not a finite number")
       for name in ("landmarks", "box", "eyes_affine", "mouth_affine", "face_affine")},
}


def _bad_value(f: Any, rec: ShardRecord, m: Manifest) -> str | None:
    """The first value of an open shard (of the right shapes and dtypes) that no reader can use."""
    checks = [(name, valid, expected) for name, (valid, expected) in _VALID_VALUES.items()]
    checks += [(name, lambda a, r, m, name=name: valid_values(name, a), "not " + OPTIONAL_FIELDS[name][2])
               for name in held_fields([f])]
    for name, valid, expected in checks:
        a = f[name][()]
        ok = valid(a, rec, m).reshape(len(a), -1).all(axis=1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            shown = np.array2string(a[i].ravel()[:4], precision=4) if a.ndim > 1 else repr(a[i].item())
            return f"damaged: its {name} of sample {i} is {shown}, {expected}"
    return None


def verify(out_dir: str | os.PathLike) -> VerifyReport:
    """Check every shard against the manifest's checksums and sample counts."""
    out = Path(out_dir)
    m = Manifest.load(out)
    ok, problems = [], []
    for rec in m.shards:
        why = check_shard(out, rec, m)
        (problems.append(f"{rec.file}: {why}") if why else ok.append(rec.file))
    listed = {r.file for r in m.shards}
    shard_dir = out / SHARD_DIR
    foreign = sorted(f"{SHARD_DIR}/{p.name}" for p in shard_dir.iterdir()
                     if f"{SHARD_DIR}/{p.name}" not in listed) if shard_dir.is_dir() else []
    return VerifyReport(ok=ok, problems=problems, complete=m.complete, foreign=foreign)


def summarize(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts per split and label, face-box methods, quality and failures, as a JSON-able dict.
    Damaged shards are left out of the counts and listed under ``damaged``."""
    import h5py

    out = Path(out_dir)
    m = Manifest.load(out)
    splits: dict[str, dict[str, int]] = {}
    methods: dict[str, int] = {}
    qualities, damaged, optional = [], [], {}
    for rec in m.shards:
        why = check_shard(out, rec, m)
        try:
            if why is None:
                with h5py.File(out / rec.file, "r") as f:
                    lab, met, q = f["label"][()], f["box_method"][()], f["quality"][()]
                    for name in held_fields([f]):
                        optional.setdefault(name, []).append(f[name][()])
        except HDF5_READ_ERRORS as e:
            why = f"unreadable ({str(e)[:100]})"
        if why:
            damaged.append(f"{rec.file}: {why}")
            continue
        qualities.append(q)
        per = splits.setdefault(rec.split, {})
        for idx, count in zip(*np.unique(lab, return_counts=True)):
            name = m.label_names[idx] if 0 <= idx < len(m.label_names) else "unlabelled"
            per[name] = per.get(name, 0) + int(count)
        for idx, count in zip(*np.unique(met, return_counts=True)):
            name = m.box_methods[idx] if 0 <= idx < len(m.box_methods) else str(idx)
            methods[name] = methods.get(name, 0) + int(count)
    return {
        "out_dir": str(out), "complete": m.complete, "samples": m.n_samples, "failed": len(m.all_failures),
        "items": m.n_samples + len(m.all_failures), "shards": len(m.shards), "damaged": damaged,
        "splits": {s: dict(sorted(splits[s].items())) for s in m.split_names if s in splits},
        "box_methods": methods, "quality": _quality_summary(qualities), "sample_values": summary_of(optional),
        "failures": m.all_failures,
        "missing": m.missing, "source": m.source, "params": m.params, "landmark_model": m.landmark_model,
        "format_version": m.format_version, "faceblocks_version": m.faceblocks_version,
    }


def _quality_summary(parts: list[np.ndarray]) -> dict[str, float]:
    q = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    q = q[np.isfinite(q)]
    if not q.size:
        return {}
    return {"min": float(q.min()), "p05": float(np.percentile(q, 5)), "median": float(np.median(q)),
            "mean": float(q.mean()), "below_0.5": int((q < 0.5).sum())}


# --------------------------------------------------------------------------------------------
# Reading


def warn_if_unfinished(m: Manifest, root: Path) -> None:
    """Say so when a shard folder comes from a preprocessing run that was stopped or killed."""
    if not m.complete:
        import warnings

        warnings.warn(f"{root} is from a preprocessing run that did not finish (stopped or killed): its "
                      "finished shards are used; run the same preprocess command again to complete it", stacklevel=3)


class ShardReader:
    """Random access to the samples of a shard folder, optionally one split and a label subset.

    Every shard used is checked against its checksum first (``verify_files``), so damaged bytes
    are a `DataError` naming the shard, never wrong data. The index (shard, row) is built once
    from the small ``label`` arrays; HDF5 files are opened lazily and reopened after a fork, so an
    instance can be handed to DataLoader workers.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str | None = None,
                 labels: Iterable[str] | None = None, verify_files: bool = True):
        self.root = Path(out_dir)
        self.manifest = m = Manifest.load(self.root)
        warn_if_unfinished(m, self.root)
        if split is not None and split not in m.split_names:
            raise InputError(f"unknown split {split!r}; allowed: {', '.join(m.split_names)}")
        keep = None
        if labels is not None:
            labels = list(labels)
            bad = [x for x in labels if x not in m.label_names]
            if bad:
                raise InputError(f"unknown label(s) {', '.join(bad)}; allowed: {', '.join(m.label_names)}")
            keep = np.array([m.label_names.index(x) for x in labels])
        self.split = split
        self.label_names = m.label_names
        self.block_sizes = {k: tuple(v) for k, v in m.block_sizes.items()}
        self.files: list[Path] = []
        rows_shard, rows_row, rows_label = [], [], []
        held: list[tuple[str, ...]] = []
        for rec in m.shards_of(split):
            lab, optional = self._labels_of(rec, verify_files)
            held.append(optional)
            rows = np.arange(len(lab)) if keep is None else np.flatnonzero(np.isin(lab, keep))
            rows_shard.append(np.full(len(rows), len(self.files), dtype=np.int32))
            rows_row.append(rows.astype(np.int32))
            rows_label.append(lab[rows])
            self.files.append(self.root / rec.file)
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if self.files else (lambda xs, dt: np.zeros(0, dt))
        self.index_shard = cat(rows_shard, np.int32)
        self.index_row = cat(rows_row, np.int32)
        self.labels = cat(rows_label, np.int64)
        # the optional arrays (`prepro.sample_values`) every shard of this view holds
        self.optional_fields = tuple(n for n in OPTIONAL_FIELDS if held and all(n in h for h in held))
        self._handles: dict[int, Any] = {}
        self._pid: int | None = None

    def _labels_of(self, rec: ShardRecord, verify_files: bool) -> tuple[np.ndarray, tuple[str, ...]]:
        """The shard's labels and the optional arrays it holds."""
        import h5py

        if verify_files:
            why = check_shard(self.root, rec, self.manifest)
            if why:
                raise DataError(f"shard {rec.file} of {self.root} is {why}: run `faceblocks verify {self.root}` "
                                "and preprocess again")
        try:
            with h5py.File(self.root / rec.file, "r") as f:
                lab = f["label"][()].astype(np.int64)
                optional = held_fields([f])
        except HDF5_READ_ERRORS as e:
            raise DataError(f"shard {rec.file} of {self.root} is unreadable ({str(e)[:100]}): run "
                            f"`faceblocks verify {self.root}`") from None
        if len(lab) != rec.n_samples:
            raise DataError(f"shard {rec.file} of {self.root} holds {len(lab)} labels, the manifest says "
                            f"{rec.n_samples}: preprocess again")
        return lab, optional

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

    def get(self, i: int, fields: Sequence[str] | str = ("eyes", "mouth", "face", "label")) -> dict[str, Any]:
        """Sample ``i`` of this view as a dict of numpy arrays / scalars / strings; ``fields`` names
        the arrays (one name, or a sequence of them)."""
        fields = _field_names(fields, self)
        try:
            f = self._file(int(self.index_shard[i]))
            r = int(self.index_row[i])
            out = {}
            for name in fields:
                v = f[name][r]
                out[name] = v.decode("utf-8") if isinstance(v, bytes) else v
        except HDF5_READ_ERRORS as e:
            raise DataError(f"{self.files[int(self.index_shard[i])].name} is damaged ({str(e)[:100]}): run "
                            f"`faceblocks verify {self.root}`") from None
        return out

    def load_all(self, fields: Sequence[str] | str = ("eyes", "mouth", "face", "label")) -> dict[str, np.ndarray]:
        """Every sample of this view in memory (for a dataset that fits); ``fields`` as in `get`."""
        fields = _field_names(fields, self)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
        for k in range(len(self.files)):
            rows = self.index_row[self.index_shard == k]
            if not len(rows):
                continue
            try:
                f = self._file(k)
                for name in fields:
                    parts[name].append(f[name][()][rows])
            except HDF5_READ_ERRORS as e:
                raise DataError(f"{self.files[k].name} is damaged ({str(e)[:100]}): run "
                                f"`faceblocks verify {self.root}`") from None
        return {name: np.concatenate(parts[name]) if parts[name] else np.zeros((0,), np.float32) for name in fields}

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}


def _field_names(fields: Sequence[str] | str, reader: ShardReader) -> tuple[str, ...]:
    """``fields`` as a tuple of shard array names: a single name is one field (iterating the string
    would ask for its letters); a name no shard holds is an InputError listing the allowed ones, an
    optional array (`prepro.sample_values`) that not every shard of ``reader`` holds one saying so."""
    names = (fields,) if isinstance(fields, str) else tuple(fields)
    unknown = [n for n in names if n not in _ALL_ARRAYS]
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_ALL_ARRAYS)}")
    absent = [n for n in names if n in OPTIONAL_FIELDS and n not in reader.optional_fields]
    if absent:
        raise InputError(f"the shards of {reader.root} hold no {' or '.join(absent)} (only a source that gives "
                         "them keeps them: FER+ its votes, AffectNet valence and arousal)")
    return names
