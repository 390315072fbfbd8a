"""Export the blocks of a shard folder for other projects: PNG class folders, NumPy archives or one HDF5 file.

Formats (``fmt``):

``png``
    ``OUT/<region>/<split>/<label>/<id>.png`` for each image region (``eyes``, ``mouth``, ``face``):
    every ``OUT/<region>/<split>`` is a class-folder tree that torchvision's ``ImageFolder`` and
    Keras' ``image_dataset_from_directory`` read as it is (label -1 goes to ``unlabelled``).
    ``OUT/manifest.csv`` has one row per sample: ``id, source, subject, split, label``, one column
    per exported image region (the PNG's path relative to OUT, with ``/``), ``landmarks_row`` when
    landmarks are exported, ``box_method``, ``quality``. Landmarks go to ``OUT/landmarks.npz``:
    ``landmarks`` float32 (N, 68, 2) in original-image pixels, ``eyes_affine``/``mouth_affine``/
    ``face_affine`` float32 (N, 2, 3) (original pixels to block pixels, to map the points onto the
    PNGs), ``image_size`` and ``ids``; row ``landmarks_row`` of each array belongs to that CSV row.
``npz``
    ``OUT/<split>.npz`` per split, readable with ``np.load(path, allow_pickle=False)``: one array per
    exported image region (uint8 (N, H, W)), ``landmarks`` plus the three affines and ``image_size``
    when landmarks are exported, ``labels`` (int64, -1 when unlabelled), ``label_names`` (index
    ``labels`` with it), ``ids``, ``sources``, ``subjects``, ``box_method`` (names), ``quality``,
    ``det_score``, and ``votes``, ``valence``, ``arousal`` where the shards keep them (FER+,
    AffectNet: see `prepro.sample_values`). Strings are fixed-width unicode arrays, never objects.
``hdf5``
    ``OUT/blocks.h5``: one file in the shard format (every dataset and root attribute of a shard,
    whatever ``regions`` says), holding the samples that pass the filters. ``shard_split`` is the
    split's name when one split is exported, else ``mixed`` (the per-sample ``split`` dataset says).

``png`` also writes ``OUT/classes.txt``, one label a line: line k is class k, the index a faceblocks
network trained on these labels gives it (the exported labels in the shards' label order; an
``ImageFolder``'s own indices are alphabetical, so map them through this list).

Every export also writes ``OUT/export.json``: the filters, the counts, ``classes`` (that list) and
the files written. File
names never come raw from the data: ids are ``<split>_<label>_<index>_<source stem>`` where split
and label are checked against the manifest's names, ``index`` is the sample's position in the
shard folder (unique, and the same whatever the filters) and the source stem keeps only
``[A-Za-z0-9_-]``; every folder is checked to lie inside OUT before anything is written to it.

An OUT that already holds files is refused unless ``overwrite``; then the files this export writes
are replaced, and the files the previous export wrote that this one does not write again are
removed (so a class-folder tree never mixes two exports) — but only those it can prove it wrote:
listed in the previous ``export.json`` with their SHA-256, unchanged since, and named as an export
names its files. Nothing else is deleted. OUT may not lie inside the shard folder, and one export
at a time writes into an OUT (a lock, see `prepro.outputs`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from prepro.command_settings import EXPORT_FORMATS
from prepro.errors import DataError, InputError, OutputError
from prepro.faces import BOX_METHODS
from prepro.inputs import is_inside
from prepro.outputs import atomic_write, atomic_write_text, is_empty_but_for_us, output_lock, sha256_file
from prepro.sample_values import OPTIONAL_FIELDS, held_fields
from prepro.shards import (BLOCK_FIELDS, HDF5_READ_ERRORS, STRING_FIELDS, Manifest, check_shard, shard_attrs,
                           warn_if_unfinished)
from prepro.words import counted

FORMATS = EXPORT_FORMATS
REGIONS = ("eyes", "mouth", "face", "landmarks")
IMAGE_REGIONS = ("eyes", "mouth", "face")
UNLABELLED = "unlabelled"
EXPORT_RECORD = "export.json"
CSV_NAME = "manifest.csv"
CLASSES_NAME = "classes.txt"  # png: line k names class k (ImageFolder's own indices are alphabetical)
LANDMARKS_NAME = "landmarks.npz"
HDF5_NAME = "blocks.h5"
GEOMETRY = ("landmarks", "eyes_affine", "mouth_affine", "face_affine", "image_size")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# The names an export gives its files: only files named so can ever be removed by a later export.
_OWN_FILE = re.compile(r"^((eyes|mouth|face)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+\.png"
                       r"|manifest\.csv|classes\.txt|landmarks\.npz|[A-Za-z0-9_-]+\.npz|blocks\.h5)$")


@dataclass
class ExportSummary:
    out_dir: str
    fmt: str
    regions: list[str]
    samples: int  # samples exported
    counts: dict[str, dict[str, int]]  # split -> label (or "unlabelled") -> samples
    files: list[str] = field(default_factory=list)  # written, relative to out_dir, "/"-separated
    removed: list[str] = field(default_factory=list)  # left by a previous export and removed (--overwrite)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def report(self) -> list[str]:
        """What `faceblocks export` says: what went where, then the samples per split and label."""
        removed = f", {len(self.removed)} left by the previous export removed" if self.removed else ""
        lines = [f"{self.samples} samples exported to {self.out_dir} as {self.fmt} ({', '.join(self.regions)}); "
                 f"{counted(len(self.files), 'file', 'files')} written{removed}"]
        return lines + [f"  {split:<6} " + ", ".join(f"{lab} {n}" for lab, n in per.items())
                        for split, per in self.counts.items()]


# --------------------------------------------------------------------------------------------
# Names


def safe_component(text: str, max_len: int = 48) -> str:
    """``text`` reduced to ``[A-Za-z0-9_-]`` (accents dropped, anything else one ``_``); may be empty.

    The result can hold no path separator, no dot (so no ``..`` and no hidden file), no control
    character: it is a plain file-name part wherever it comes from.
    """
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE_CHARS.sub("_", text).strip("_-")
    return text[:max_len].strip("_-")


def source_stem(source: str) -> str:
    """A readable, safe stem of a sample's source: its last path component without extension.

    ``train/happy/Training_12.jpg`` gives ``Training_12``; ``fer2013.csv:row=17`` gives
    ``fer2013_csv_row_17``; ``../../etc/passwd`` gives ``passwd``.
    """
    name = re.split(r"[/\\]", str(source).rstrip("/\\"))[-1]
    name = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name) or name
    return safe_component(name)


def sample_id(split: str, label: str, index: int, source: str) -> str:
    stem = source_stem(source)
    base = f"{split}_{label}_{index:06d}"
    return f"{base}_{stem}" if stem else base


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name == UNLABELLED and kind == "label":
        raise DataError(f"the shard folder's manifest has a {kind} name {name!r} that cannot be used "
                        "as a folder name; the folder is damaged or not made by faceblocks")
    return name


def _inside(root: Path, path: Path) -> Path:
    if not is_inside(path, root):
        raise OutputError(f"{path} would lie outside {root}; refusing to write there")
    return path


def _choose(kind: str, asked: Iterable[str] | str | None, allowed: Sequence[str],
            extra: Sequence[str] = ()) -> list[str] | None:
    if asked is None:
        return None
    if isinstance(asked, str):
        asked = [asked]
    names: list[str] = []
    for item in asked:
        names += [x.strip() for x in str(item).split(",") if x.strip()]
    ok = list(allowed) + [x for x in extra if x not in allowed]
    bad = [x for x in names if x not in ok]
    if bad:
        raise InputError(f"unknown {kind}(s) {', '.join(map(repr, bad))}; allowed: {', '.join(ok)}")
    if not names:
        raise InputError(f"no {kind} given")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# Selection


@dataclass
class _Part:
    """The rows of one shard that pass the filters."""

    path: Path
    start: int  # position of the shard's first sample in the whole folder
    rows: np.ndarray  # selected rows of the shard
    split: np.ndarray  # per selected row: split index
    label: np.ndarray  # per selected row: label index (-1 unlabelled)


def _select(root: Path, m: Manifest, splits, labels, box_methods, min_quality) -> list[_Part]:
    import h5py

    split_idx = None if splits is None else {m.split_names.index(s) for s in splits}
    label_idx = None
    if labels is not None:
        label_idx = {-1 if x == UNLABELLED else m.label_names.index(x) for x in labels}
    method_idx = None
    if box_methods is not None:
        method_idx = {m.box_methods.index(b) for b in box_methods if b in m.box_methods}
    parts: list[_Part] = []
    start = 0
    for seg in m.shards:
        n_seg = seg.n_samples
        if splits is not None and seg.split not in splits:
            start += n_seg
            continue
        path = root / seg.file
        why = check_shard(root, seg, m)
        if why:
            raise DataError(f"shard {seg.file} is {why}: run `faceblocks verify {root}` and preprocess again")
        try:
            with h5py.File(path, "r") as f:
                lab = f["label"][()].astype(np.int64)
                spl = f["split"][()].astype(np.int64)
                met = f["box_method"][()].astype(np.int64)
                qual = f["quality"][()].astype(np.float64)
        except HDF5_READ_ERRORS as e:
            raise DataError(f"shard {seg.file} is unreadable ({str(e)[:100]}): run `faceblocks verify {root}`") from None
        keep = np.ones(len(lab), bool)
        if split_idx is not None:
            keep &= np.isin(spl, list(split_idx))
        if label_idx is not None:
            keep &= np.isin(lab, list(label_idx))
        if method_idx is not None:
            keep &= np.isin(met, list(method_idx))
        if min_quality is not None:
            keep &= qual >= min_quality  # NaN quality never passes
        rows = np.flatnonzero(keep)
        if len(rows):
            if spl[rows].min() < 0 or spl[rows].max() >= len(m.split_names):
                raise DataError(f"shard {seg.file} has a split index outside the manifest's split names")
            if lab[rows].min() < -1 or lab[rows].max() >= len(m.label_names):
                raise DataError(f"shard {seg.file} has a label index outside the manifest's label names")
            parts.append(_Part(path=path, start=start, rows=rows, split=spl[rows], label=lab[rows]))
        start += len(lab)
    return parts


def _read_rows(f, name: str, rows: np.ndarray) -> np.ndarray:
    ds = f[name]
    if len(rows) == ds.shape[0]:
        return ds[()]
    if len(rows) * 4 >= ds.shape[0]:  # one read of the whole shard is faster than many small ones
        return ds[()][rows]
    return np.stack([ds[int(r)] for r in rows]) if ds.ndim > 1 else ds[()][rows]


def _method_name(m: Manifest, index) -> str:
    i = int(index)
    return m.box_methods[i] if 0 <= i < len(m.box_methods) else str(i)


def _strings(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


# --------------------------------------------------------------------------------------------
# Output folder


class _Out:
    """The output folder: refusal without overwrite, containment checks, the files written and
    their checksums, and the removal of what the previous export provably wrote."""

    def __init__(self, out_dir: Path, overwrite: bool):
        self.root = Path(out_dir)
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{self.root} is a file, not a folder")
        previous: dict[str, str] = {}
        if self.root.is_dir() and not is_empty_but_for_us(self.root):
            if not overwrite:
                raise OutputError(f"{self.root} already holds files; pass --overwrite to replace "
                                  "the files this export writes (other files are left alone)")
            previous = self._previous_files()
        self.previous = previous
        self.files: dict[str, str] = {}  # relative path -> SHA-256, in writing order
        self._dirs_ok: set[str] = set()

    def _previous_files(self) -> dict[str, str]:
        """What the previous export's record lists as written (path -> SHA-256); {} if unreadable."""
        try:
            files = json.loads((self.root / EXPORT_RECORD).read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            return {}
        if not isinstance(files, dict):
            return {}
        return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}

    def path(self, rel: str) -> Path:
        """``OUT/rel`` after checking that its folder lies inside OUT (creating the folder)."""
        p = self.root / rel
        parent = str(p.parent)
        if parent not in self._dirs_ok:
            _inside(self.root, p.parent)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create {p.parent} ({e.strerror or e})") from None
            _inside(self.root, p.parent)  # again, after mkdir: a symlink on the way shows now
            self._dirs_ok.add(parent)
        if p.is_symlink():
            p.unlink()  # replace the link itself, never what it points to
        return p

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        try:
            p.write_bytes(data)
        except OSError as e:
            # What was written of it is a cut file (a full disk): never leave it looking like an export.
            if p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
            raise OutputError(f"cannot write {p} ({e.strerror or e})") from None
        self.files[rel] = hashlib.sha256(data).hexdigest()

    def write_atomic(self, rel: str, write, mode: str = "wb") -> None:
        p = self.path(rel)
        atomic_write(p, write, mode)
        self.files[rel] = sha256_file(p)

    def remove_stale(self) -> list[str]:
        """Remove the files the previous export provably wrote that this one did not; then the
        folders that became empty."""
        removed, folders = [], set()
        for rel, digest in self.previous.items():
            if rel in self.files or not _OWN_FILE.match(rel):
                continue
            p = self.root / rel
            try:
                _inside(self.root, p.parent)
            except OutputError:
                continue
            if p.is_file() and not p.is_symlink() and sha256_file(p) == digest:
                p.unlink()
                removed.append(rel)
                folders.update(q for q in p.parents if q != self.root and self.root in q.parents)
        for d in sorted(folders, key=lambda q: len(q.parts), reverse=True):
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass
        return removed


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="sample", desc=desc, dynamic_ncols=True, leave=False)


# --------------------------------------------------------------------------------------------
# Export


def export_blocks(shards_dir: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "png",
                  regions: Iterable[str] | str = ("eyes", "mouth"), splits: Iterable[str] | str | None = None,
                  labels: Iterable[str] | str | None = None, box_methods: Iterable[str] | str | None = None,
                  min_quality: float | None = None, overwrite: bool = False,
                  progress: bool = True) -> ExportSummary:
    """Export the blocks of the shard folder ``shards_dir`` that pass the filters to ``out_dir``.

    ``splits``, ``labels`` and ``box_methods`` are lists of names (or comma-separated strings);
    ``labels`` are canonical label names, plus ``unlabelled`` for samples without a label;
    ``min_quality`` keeps samples whose landmark quality is at least that. See the module's
    docstring for the three formats and the file layout.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    regions = _choose("region", regions, REGIONS)
    if regions is None:
        raise InputError("no region given")
    root = Path(shards_dir)
    m = Manifest.load(root)
    warn_if_unfinished(m, root)
    for name in m.split_names:
        _check_name("split", name)
    for name in m.label_names:
        _check_name("label", name)
    splits = _choose("split", splits, m.split_names)
    labels = _choose("label", labels, m.label_names, [UNLABELLED])
    box_methods = _choose("box method", box_methods, BOX_METHODS, m.box_methods)
    if min_quality is not None and not (0.0 <= float(min_quality) <= 1.0):
        raise InputError(f"min_quality must be between 0 and 1, not {min_quality}")
    real_out, real_root = Path(os.path.realpath(out_dir)), Path(os.path.realpath(root))
    if real_out == real_root or real_root in real_out.parents:
        raise OutputError(f"the export folder {out_dir} must not be the shard folder {root} or lie inside it")

    parts = _select(root, m, splits, labels, box_methods, min_quality)
    total = sum(len(p.rows) for p in parts)
    if total == 0:
        raise InputError(f"no sample of {root} passes the filters; nothing exported")
    with output_lock(Path(out_dir)):
        return _export(root, m, _Out(Path(out_dir), overwrite), fmt, regions, parts,
                       {"splits": splits, "labels": labels, "box_methods": box_methods, "min_quality": min_quality},
                       progress)


def _export(root: Path, m: Manifest, out: "_Out", fmt: str, regions: list[str], parts: list[_Part],
            filters: dict[str, Any], progress: bool) -> ExportSummary:
    import h5py

    total = sum(len(p.rows) for p in parts)
    label_of = lambda i: UNLABELLED if i < 0 else m.label_names[i]  # noqa: E731
    counts: dict[str, dict[str, int]] = {}
    for p in parts:
        for s, lab in zip(p.split, p.label):
            per = counts.setdefault(m.split_names[s], {})
            name = label_of(int(lab))
            per[name] = per.get(name, 0) + 1
    counts = {s: dict(sorted(counts[s].items())) for s in m.split_names if s in counts}

    # The exported labels in the shards' label order: the class indices a faceblocks network
    # trained on them has (FER2013: neutral is 6, as in the shipped model).
    classes = [n for n in m.label_names if any(n in per for per in counts.values())]
    writer = {"png": _export_png, "npz": _export_npz, "hdf5": _export_hdf5}[fmt]
    with _progress(total, progress, f"export {fmt}") as bar:
        writer(out, m, parts, regions, label_of, bar, h5py)
    if fmt == "png":
        out.write_atomic(CLASSES_NAME, lambda fh: fh.write("".join(f"{n}\n" for n in classes)), "w")
    removed = out.remove_stale()
    if fmt == "hdf5":
        regions = list(REGIONS)  # a shard-format file holds every dataset of a shard
    summary = ExportSummary(out_dir=str(out.root), fmt=fmt, regions=list(regions), samples=total,
                            counts=counts, files=list(out.files), removed=removed)
    record = {"shards_dir": str(root), "format": fmt, "regions": list(regions), "filters": filters,
              "samples": total, "counts": counts, "classes": classes, "files": out.files, "faceblocks_version": m.faceblocks_version}
    atomic_write_text(out.root / EXPORT_RECORD, json.dumps(record, indent=1, ensure_ascii=False))
    return summary


def _ids(m: Manifest, p: _Part, sources: list[str], label_of) -> list[str]:
    return [sample_id(m.split_names[s], label_of(int(lab)), p.start + int(r), src)
            for r, s, lab, src in zip(p.rows, p.split, p.label, sources)]


def _export_png(out: _Out, m: Manifest, parts: list[_Part], regions, label_of, bar, h5py) -> None:
    images = [r for r in IMAGE_REGIONS if r in regions]
    with_landmarks = "landmarks" in regions
    total = sum(len(p.rows) for p in parts)
    geometry = {name: np.zeros((total,) + shape, np.int32 if name == "image_size" else np.float32)
                for name, shape in (("landmarks", (68, 2)), ("eyes_affine", (2, 3)), ("mouth_affine", (2, 3)),
                                    ("face_affine", (2, 3)), ("image_size", (2,)))} if with_landmarks else {}
    all_ids: list[str] = []
    header = (["id", "source", "subject", "split", "label"] + images
              + (["landmarks_row"] if with_landmarks else []) + ["box_method", "quality"])

    def write_csv(fh) -> None:
        w = csv.writer(fh)
        w.writerow(header)
        for p in parts:
            rows = _png_rows(out, m, p, images, geometry, len(all_ids), label_of, h5py)
            for row in rows:
                if with_landmarks:
                    row.insert(5 + len(images), len(all_ids))
                all_ids.append(row[0])
                w.writerow(row)
                bar.update(1)

    out.write_atomic(CSV_NAME, write_csv, "w")
    if with_landmarks:
        out.write_atomic(LANDMARKS_NAME, lambda fh: np.savez_compressed(fh, ids=np.array(all_ids, dtype=str),
                                                                        **geometry))


def _png_rows(out: _Out, m: Manifest, p: _Part, images: list[str], geometry: dict, at: int, label_of,
              h5py) -> list[list]:
    """Write one shard part's PNGs; its CSV rows (without the landmarks column)."""
    import cv2

    with h5py.File(p.path, "r") as f:
        sources = _strings(_read_rows(f, "source", p.rows))
        subjects = _strings(_read_rows(f, "subject", p.rows))
        methods = _read_rows(f, "box_method", p.rows)
        quality = _read_rows(f, "quality", p.rows)
        blocks = {r: _read_rows(f, r, p.rows) for r in images}
        for name in geometry:
            geometry[name][at:at + len(p.rows)] = _read_rows(f, name, p.rows)
    rows = []
    for k, sid in enumerate(_ids(m, p, sources, label_of)):
        split, label = m.split_names[int(p.split[k])], label_of(int(p.label[k]))
        row = [sid, sources[k], subjects[k], split, label]
        for r in images:
            rel = f"{r}/{split}/{label}/{sid}.png"
            ok, buf = cv2.imencode(".png", blocks[r][k])
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {rel} as PNG")
            out.write_bytes(rel, buf.tobytes())
            row.append(rel)
        row += [_method_name(m, methods[k]), np.format_float_positional(np.float32(quality[k]), unique=True, trim="-")]
        rows.append(row)
    return rows


def _export_npz(out: _Out, m: Manifest, parts: list[_Part], regions, label_of, bar, h5py) -> None:
    images = [r for r in IMAGE_REGIONS if r in regions]
    fields = images + (list(GEOMETRY) if "landmarks" in regions else [])
    for si, split in enumerate(m.split_names):
        mine = [p for p in parts if (p.split == si).any()]
        if not mine:
            continue
        acc: dict[str, list] = {k: [] for k in fields + ["labels", "ids", "sources", "subjects",
                                                           "box_method", "quality", "det_score"]}
        for p in mine:
            sel = p.split == si
            rows = p.rows[sel]
            q = _Part(path=p.path, start=p.start, rows=rows, split=p.split[sel], label=p.label[sel])
            with h5py.File(p.path, "r") as f:
                for name in fields:
                    acc[name].append(_read_rows(f, name, rows))
                sources = _strings(_read_rows(f, "source", rows))
                acc["sources"] += sources
                acc["subjects"] += _strings(_read_rows(f, "subject", rows))
                acc["box_method"] += [_method_name(m, i) for i in _read_rows(f, "box_method", rows)]
                acc["quality"].append(_read_rows(f, "quality", rows).astype(np.float32))
                acc["det_score"].append(_read_rows(f, "det_score", rows).astype(np.float32))
                for name in held_fields([f]):  # FER+ votes, valence, arousal: where the source gave them
                    acc.setdefault(name, []).append(_read_rows(f, name, rows))
            acc["labels"].append(q.label.astype(np.int64))
            acc["ids"] += _ids(m, q, sources, label_of)
            bar.update(len(rows))
        optional = [k for k in OPTIONAL_FIELDS if len(acc.get(k, ())) == len(mine)]
        arrays = {k: np.concatenate(acc[k]) for k in fields + ["labels", "quality", "det_score"] + optional}
        for k in ("ids", "sources", "subjects", "box_method"):
            arrays[k] = np.array(acc[k], dtype=str)
        arrays["label_names"] = np.array(m.label_names, dtype=str)
        arrays["split"] = np.array(split, dtype=str)
        out.write_atomic(f"{split}.npz", lambda fh: np.savez_compressed(fh, **arrays))


def _export_hdf5(out: _Out, m: Manifest, parts: list[_Part], regions, label_of, bar, h5py) -> None:
    used = sorted({int(s) for p in parts for s in np.unique(p.split)})
    split_attr = m.split_names[used[0]] if len(used) == 1 else "mixed"

    def write(fh) -> None:
        with h5py.File(parts[0].path, "r") as first, h5py.File(fh, "w", track_order=True) as dst:
            _hdf5_layout(first, dst, sum(len(p.rows) for p in parts), h5py)
            for key, value in shard_attrs(m, split_attr, 0).items():
                dst.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
            dst.attrs["n_samples"] = sum(len(p.rows) for p in parts)
            at = 0
            for p in parts:
                n = len(p.rows)
                with h5py.File(p.path, "r") as f:
                    for name in first.keys():
                        data = _read_rows(f, name, p.rows)
                        dst[name][at:at + n] = np.array(_strings(data), dtype=object) if name in STRING_FIELDS else data
                at += n
                bar.update(n)

    out.write_atomic(HDF5_NAME, write, "w+b")  # h5py reads back what it writes


def _hdf5_layout(first, dst, total: int, h5py) -> None:
    """Datasets shaped like a shard's, for ``total`` samples."""
    for name in first.keys():
        src = first[name]
        shape = (total,) + src.shape[1:]
        if name in STRING_FIELDS:
            dst.create_dataset(name, shape=shape, dtype=h5py.string_dtype("utf-8"), track_times=False)
        elif name in BLOCK_FIELDS:
            dst.create_dataset(name, shape=shape, dtype=src.dtype, chunks=(1,) + src.shape[1:], compression="gzip",
                               compression_opts=4, shuffle=False, track_times=False)
        else:
            dst.create_dataset(name, shape=shape, dtype=src.dtype, chunks=(min(total, 1024),) + src.shape[1:],
                               compression="gzip", compression_opts=4, track_times=False)


__all__ = ["ExportSummary", "export_blocks", "safe_component", "source_stem", "sample_id",
           "FORMATS", "REGIONS", "BOX_METHODS"]
