"""List the items of a raw face-image source: class folders, the FER2013 CSV, FERG-DB, JAFFE, flat.

Listing only looks at names (and, for the CSV, at each row's fields): decoding images and pixel
strings happens later, in the workers. Every input is accounted for: each file or row becomes a
`RawItem` or a `Failure` with a human-readable reason; only hidden names (".DS_Store") are skipped.
Names come from the data: nothing here builds an output path from them.
"""

from __future__ import annotations

import glob
import gzip
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np

from prepro.labels import CANONICAL_LABELS, UnknownLabelError, canonical_label
from prepro.specs import SPLITS, DatasetSpec, load_spec

FORMATS = ("auto", "folder", "fer2013-csv", "ferg", "jaffe", "flat")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Split folder names (compared lower-case) -> split.
SPLIT_FOLDER_NAMES: Mapping[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}

# FER2013's file-name prefixes (Kaggle folders) and Usage values (CSV).
FER2013_SPLIT_NAMES: Mapping[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

# KA.AN1.39.tiff: subject KA, expression AN, picture 1 of it, image number 39.
JAFFE_PATTERN = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})\d*\.\d+\.[A-Za-z]+$")

_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}


class SourceNotFoundError(FileNotFoundError):
    """The source path does not exist."""


class EmptySourceError(ValueError):
    """A source in which no usable image (or CSV row) was found."""


class FormatDetectionError(ValueError):
    """`detect_format` could not recognise the layout."""


class UnknownFormatError(ValueError):
    """A format name that is not in `FORMATS`."""


class CsvHeaderError(ValueError):
    """A CSV file whose header lacks the columns the FER2013 reader needs."""


class BadPixelsError(ValueError):
    """A FER2013 pixel string that is not ``size*size`` integers in 0..255."""


@dataclass(frozen=True)
class RawItem:
    # stable id: POSIX path relative to the root, or "<csvname>:row=<n>" (n = 0-based data row)
    source_id: str
    path: str             # absolute path of the file to read (the image, or the CSV file)
    label: str | None     # canonical label, or None when unlabelled
    split: str | None     # "train" | "val" | "test" from the source, or None (assigned later)
    subject: str | None   # identity, for subject-disjoint splits
    offset: int = -1      # CSV only: byte offset of the row's line in the (uncompressed) file; -1 for images


@dataclass(frozen=True)
class Failure:
    source: str           # source id (or folder) that could not be used
    reason: str           # human-readable reason


@dataclass
class Listing:
    format: str
    root: str
    items: list[RawItem]      # deterministic order: see `order_key`
    failures: list[Failure]   # found while listing, sorted by source
    spec: DatasetSpec | None = None  # the dataset description that applied (given, or builtin default)


def order_key(item: RawItem) -> tuple:
    """Listing order: split (train, val, test, None), then source id; CSV rows in file order.

    CSV rows are ordered by byte offset rather than by the text of their id ("row=10" would sort
    before "row=2"), so that reading them moves forward through a gzip stream.
    """
    rank = _SPLIT_RANK.get(item.split, len(SPLITS)) if item.split is not None else len(SPLITS)
    if item.offset >= 0:
        return (rank, item.path, item.offset, item.source_id)
    return (rank, "", -1, item.source_id)


def is_image_file(name: str) -> bool:
    """True when ``name`` has one of `IMG_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMG_EXTENSIONS)


def expand_image_inputs(inputs: Iterable[str]) -> list[str]:
    """Files, folders (searched recursively for images) and glob patterns, in a stable order."""
    out: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
        elif os.path.exists(item):
            out.append(item)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            out += [m for m in matches if os.path.isfile(m)]
    return out


def _safe_text(name: str) -> str:
    # Names that are not valid UTF-8 arrive with surrogate escapes; show their bytes instead.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Walking folders


class _Walker:
    """Scans folders below ``root`` in sorted order, recording what cannot be used as failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_text = str(root)
        self.failures: list[Failure] = []

    def rel(self, path: str) -> str:
        prefix = self._root_text.rstrip(os.sep) + os.sep
        # Paths are built by joining names onto the root, so slicing is exact (and 10x cheaper
        # than relpath over tens of thousands of files).
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, self._root_text)
        return _safe_text(rel.replace(os.sep, "/"))

    def fail(self, path: str, reason: str, folder: bool = False) -> None:
        self.failures.append(Failure(self.rel(path) + ("/" if folder else ""), reason))

    def entries(self, folder: str) -> tuple[list[str], list[str]] | None:
        """(sub-folders, files) of ``folder`` as sorted absolute paths; None if unreadable.

        Hidden names are skipped; links out of the root, odd names and special files are failures.
        """
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.fail(folder, f"unreadable folder ({e.strerror or e})", folder=True)
            return None
        dirs: list[str] = []
        files: list[str] = []
        for e in found:
            if e.name.startswith("."):
                continue  # .DS_Store, .ipynb_checkpoints, ._AppleDouble: never data
            if not _is_utf8(e.name):
                self.fail(e.path, "name is not valid UTF-8; rename it")
                continue
            try:
                if e.is_symlink():
                    kind = self._link_kind(e.path)
                    if kind is None:
                        continue
                elif e.is_dir(follow_symlinks=False):
                    kind = "dir"
                elif e.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    self.fail(e.path, "not a regular file (device, pipe or socket)")
                    continue
            except OSError as err:
                self.fail(e.path, f"cannot be examined ({err.strerror or err})")
                continue
            (dirs if kind == "dir" else files).append(e.path)
        return dirs, files

    def _link_kind(self, path: str) -> str | None:
        target = os.path.realpath(path)
        if not os.path.exists(target):
            self.fail(path, "broken symbolic link")
            return None
        if os.path.commonpath([target, self._root_text]) != self._root_text:
            self.fail(path, "symbolic link to a place outside the source folder; not followed")
            return None
        if os.path.isdir(target):
            # Its target is inside the root and is listed there; following it would list files twice
            # (or loop forever).
            self.fail(path, "symbolic link to a folder inside the source; not followed "
                            "(that folder is listed under its own name)", folder=True)
            return None
        return "file"

    def images(self, folder: str) -> Iterator[str]:
        """Image files below ``folder`` (recursively, sorted); other files become failures."""
        got = self.entries(folder)
        if got is None:
            return
        dirs, files = got
        for f in files:
            if is_image_file(f):
                yield f
            else:
                ext = os.path.splitext(f)[1]
                self.fail(f, f"not an image file (extension {ext})" if ext else
                          "not an image file (no extension)")
        for d in dirs:
            yield from self.images(d)

    def fail_all(self, folder: str, reason: str) -> None:
        """Every file below ``folder`` is a failure with ``reason``."""
        got = self.entries(folder)
        if got is None:
            return
        dirs, files = got
        for f in files:
            self.fail(f, reason)
        for d in dirs:
            self.fail_all(d, reason)


def _subject_from_name(name: str, spec: DatasetSpec | None) -> tuple[str | None, str | None]:
    """(subject, None) from the spec's subject pattern, or (None, failure reason)."""
    if spec is None or spec.subject_pattern is None:
        return None, None
    m = re.search(spec.subject_pattern, name)
    if m is None or not m.group(1):
        return None, (f"file name does not match the subject pattern {spec.subject_pattern!r} "
                      f"of dataset {spec.name!r}")
    return m.group(1), None


def _label_or_reason(name: str, spec: DatasetSpec | None) -> tuple[str | None, str | None]:
    try:
        return canonical_label(name, spec.labels if spec else None), None
    except UnknownLabelError as e:
        return None, str(e)


# ---------------------------------------------------------------------------------------------
# folder: ROOT/<label>/* or ROOT/<split>/<label>/*


def find_classes(directory: str | os.PathLike, extra_aliases: Mapping[str, str] | None = None,
                 ) -> tuple[list[str], dict[str, int]]:
    """Class folders of ``directory``: (sorted folder names, folder name -> label index).

    Like torchvision's ``find_classes``, but the index is the position of the folder's canonical
    label in `CANONICAL_LABELS` (so "anger" and "angry" both give 0). Folders whose name is no
    known label are in the first list but not in the mapping; `list_source` reports their files.
    """
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class folders in {directory}")
    class_to_idx = {}
    for c in classes:
        try:
            class_to_idx[c] = CANONICAL_LABELS.index(canonical_label(c, extra_aliases))
        except UnknownLabelError:
            pass  # reported per file by the listing, with the allowed labels
    return classes, class_to_idx


def _split_folder_names(spec: DatasetSpec | None) -> dict[str, str]:
    names = dict(SPLIT_FOLDER_NAMES)
    if spec is not None:
        names.update({k.lower(): v for k, v in spec.split_names.items()})
    return names


def _prefix_pattern(names: Mapping[str, str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))
    return re.compile(rf"^({alts})_")


def _list_folder(w: _Walker, spec: DatasetSpec | None) -> list[RawItem]:
    root = str(w.root)
    got = w.entries(root)
    if got is None:
        return []
    top_dirs, top_files = got
    split_names = _split_folder_names(spec)
    split_layout = any(os.path.basename(d).lower() in split_names for d in top_dirs)

    for f in top_files:
        where = "ROOT/<split>/<label>/<file>" if split_layout else "ROOT/<label>/<file>"
        w.fail(f, f"not inside a class folder (expected {where})")

    # (split folder's split or None, [(path, label)])
    groups: list[tuple[str | None, list[tuple[str, str]]]] = []
    if split_layout:
        for d in top_dirs:
            split = split_names.get(os.path.basename(d).lower())
            if split is None:
                w.fail_all(d, f"folder {os.path.basename(d)!r} is not a split folder; allowed: "
                              f"{', '.join(sorted(split_names))}")
                continue
            sub = w.entries(d)
            if sub is None:
                continue
            class_dirs, stray = sub
            for f in stray:
                w.fail(f, "not inside a class folder (expected ROOT/<split>/<label>/<file>)")
            groups.append((split, _class_files(w, class_dirs, spec)))
    else:
        groups.append((None, _class_files(w, top_dirs, spec)))

    if spec is not None and spec.split_from_filename_prefix:
        prefix_names: Mapping[str, str] = spec.split_names
    else:
        prefix_names = FER2013_SPLIT_NAMES
    prefix_re = _prefix_pattern(prefix_names)

    items: list[RawItem] = []
    for split, files in groups:
        by_prefix = bool(spec is not None and spec.split_from_filename_prefix)
        if not by_prefix and split == "test" and files:
            # Kaggle's FER2013 test/ folder holds both the public and the private test halves;
            # they differ only by the file-name prefix. When every file there carries such a
            # prefix, the prefix decides (PublicTest -> val, PrivateTest -> test), spec or not.
            by_prefix = all(prefix_re.match(os.path.basename(p)) for p, _ in files)
        for path, label in files:
            name = os.path.basename(path)
            item_split = split
            if by_prefix:
                m = prefix_re.match(name)
                if m is None:
                    w.fail(path, "file name has no split prefix (expected one of "
                                 f"{', '.join(k + '_' for k in prefix_names)})")
                    continue
                item_split = prefix_names[m.group(1)]
            subject, why = _subject_from_name(name, spec)
            if why:
                w.fail(path, why)
                continue
            items.append(RawItem(w.rel(path), path, label, item_split, subject))
    return items


def _class_files(w: _Walker, class_dirs: list[str], spec: DatasetSpec | None) -> list[tuple[str, str]]:
    out = []
    for d in class_dirs:
        name = os.path.basename(d)
        label, why = _label_or_reason(name, spec)
        if label is None:
            w.fail_all(d, f"class folder {name!r}: {why}")
            continue
        out.extend((p, label) for p in w.images(d))
    return out


# ---------------------------------------------------------------------------------------------
# ferg: ROOT/<character>/<character>_<emotion>/*.png


def _list_ferg(w: _Walker, spec: DatasetSpec | None) -> list[RawItem]:
    got = w.entries(str(w.root))
    if got is None:
        return []
    chars, top_files = got
    expected = "expected ROOT/<character>/<character>_<emotion>/<file>"
    for f in top_files:
        w.fail(f, f"not inside a character folder ({expected})")
    items = []
    for cdir in chars:
        character = os.path.basename(cdir)
        sub = w.entries(cdir)
        if sub is None:
            continue
        emo_dirs, stray = sub
        for f in stray:
            w.fail(f, f"not inside an emotion folder ({expected})")
        for edir in emo_dirs:
            ename = os.path.basename(edir)
            if not ename.lower().startswith(character.lower() + "_"):
                w.fail_all(edir, f"folder {ename!r} is not named {character}_<emotion> ({expected})")
                continue
            label, why = _label_or_reason(ename[len(character) + 1:], spec)
            if label is None:
                w.fail_all(edir, f"emotion folder {ename!r}: {why}")
                continue
            # the character is the identity: FERG has one rendered character per folder
            items.extend(RawItem(w.rel(p), p, label, None, character) for p in w.images(edir))
    return items


# ---------------------------------------------------------------------------------------------
# jaffe and flat


def _list_jaffe(w: _Walker, spec: DatasetSpec | None) -> list[RawItem]:
    items = []
    for path in w.images(str(w.root)):
        name = os.path.basename(path)
        m = JAFFE_PATTERN.match(name)
        if m is None:
            w.fail(path, "name does not match the JAFFE pattern <subject>.<expression><n>.<number>.<ext> "
                         "(e.g. KA.AN1.39.tiff)")
            continue
        label, why = _label_or_reason(m.group(2), spec)
        if label is None:
            w.fail(path, f"expression code {m.group(2)!r}: {why}")
            continue
        subject, why = _subject_from_name(name, spec)
        if why:
            w.fail(path, why)
            continue
        items.append(RawItem(w.rel(path), path, label, None, subject or m.group(1)))
    return items


def _list_flat(w: _Walker, spec: DatasetSpec | None) -> list[RawItem]:
    items = []
    for path in w.images(str(w.root)):
        subject, why = _subject_from_name(os.path.basename(path), spec)
        if why:
            w.fail(path, why)
            continue
        items.append(RawItem(w.rel(path), path, None, None, subject))
    return items


# ---------------------------------------------------------------------------------------------
# fer2013-csv: emotion,pixels[,Usage]


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _split_fields(line: bytes) -> list[str]:
    text = line.decode("utf-8").rstrip("\r\n")
    # FER2013 fields hold no commas; some exports quote them or put a space after the comma
    return [f.strip().strip('"').strip() for f in text.split(",")]


def _csv_columns(header: bytes, path: str) -> dict[str, int]:
    """Column name (lower case) -> index, from the header line; raises `CsvHeaderError`."""
    try:
        names = [n.lower() for n in _split_fields(header.removeprefix(b"\xef\xbb\xbf"))]
    except UnicodeDecodeError:
        raise CsvHeaderError(f"{path}: the header line is not UTF-8 text") from None
    cols = {n: i for i, n in enumerate(names) if n}
    missing = [c for c in ("emotion", "pixels") if c not in cols]
    if missing:
        raise CsvHeaderError(f"{path}: header {header[:80].decode('utf-8', 'replace').strip()!r} lacks "
                             f"column(s) {', '.join(missing)}; expected emotion,pixels[,Usage]")
    return cols


def _list_csv(path: str, spec: DatasetSpec | None, failures: list[Failure]) -> list[RawItem]:
    csv_name = os.path.basename(path)
    codes = {k.strip(): v for k, v in (spec.labels if spec else {}).items()}
    usage_map = {k.lower(): v for k, v in (spec.split_names if spec else FER2013_SPLIT_NAMES).items()}
    allowed_usage = ", ".join(spec.split_names if spec and spec.split_names else FER2013_SPLIT_NAMES)
    allowed_codes = ", ".join(f"{k}={v}" for k, v in codes.items()) or ", ".join(CANONICAL_LABELS)
    label_cache: dict[str, str | None] = {}
    items: list[RawItem] = []
    with _open_binary(path) as fh:
        header = fh.readline()
        if not header.strip():
            raise EmptySourceError(f"{path}: empty file; expected a header emotion,pixels[,Usage] and rows")
        cols = _csv_columns(header, path)
        i_emo, i_pix, i_use = cols["emotion"], cols["pixels"], cols.get("usage")
        n_fields = max(cols.values()) + 1
        offset = len(header)
        n = -1
        # One streaming pass; only the offset of each row is kept, never its pixel string.
        for line in fh:
            n += 1
            row_offset, offset = offset, offset + len(line)
            sid = f"{csv_name}:row={n}"
            where = f"line {n + 2}"
            try:
                fields = _split_fields(line)
            except UnicodeDecodeError:
                failures.append(Failure(sid, f"{where}: not UTF-8 text"))
                continue
            if fields == [""]:
                failures.append(Failure(sid, f"{where}: empty line"))
                continue
            if len(fields) != n_fields:
                failures.append(Failure(sid, f"{where}: {len(fields)} fields, expected {n_fields} "
                                             f"({header.decode('utf-8', 'replace').strip()})"))
                continue
            emo, pix = fields[i_emo], fields[i_pix]
            if not emo or not pix:
                failures.append(Failure(sid, f"{where}: missing field {'emotion' if not emo else 'pixels'}"))
                continue
            if emo not in label_cache:
                if emo in codes:
                    label_cache[emo] = codes[emo]
                else:
                    label_cache[emo] = _label_or_reason(emo, spec)[0]
            label = label_cache[emo]
            if label is None:
                failures.append(Failure(sid, f"{where}: unknown emotion {emo!r}; allowed: {allowed_codes}"))
                continue
            split = None
            if i_use is not None:
                usage = fields[i_use]
                if not usage:
                    failures.append(Failure(sid, f"{where}: missing field Usage"))
                    continue
                split = usage_map.get(usage.lower())
                if split is None:
                    failures.append(Failure(sid, f"{where}: unknown Usage {usage!r}; "
                                                 f"allowed: {allowed_usage}"))
                    continue
            items.append(RawItem(sid, path, label, split, None, row_offset))
    return items


class CsvRowReader:
    """Reads the pixels field of CSV rows by byte offset, keeping the file open between calls.

    Rows asked for in file order cost one ``readline`` each; a gzip stream then only moves
    forward instead of being decompressed again from the start for every row.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._fh: IO[bytes] | None = None
        self._header_len = 0
        self._pixels_col = 0

    def pixels(self, path: str, offset: int) -> str:
        """The pixels field of the row whose line starts at byte ``offset`` (of the uncompressed
        stream, as recorded in `RawItem.offset`). Raises `BadPixelsError` if there is no such row."""
        if path != self._path:
            self.close()
            self._fh = _open_binary(path)
            header = self._fh.readline()
            self._pixels_col = _csv_columns(header, path)["pixels"]
            self._header_len = len(header)
            self._path = path
        if offset < self._header_len:
            raise BadPixelsError(f"{path}: byte offset {offset} is inside the header, not at a row")
        if self._fh.tell() != offset:
            self._fh.seek(offset)  # gzip: forward seeks decompress only the gap
        line = self._fh.readline()
        try:
            fields = _split_fields(line)
        except UnicodeDecodeError:
            raise BadPixelsError(f"{path}: the row at byte offset {offset} is not UTF-8 text") from None
        if len(fields) <= self._pixels_col:
            raise BadPixelsError(f"{path}: no pixels field in the row at byte offset {offset}")
        return fields[self._pixels_col]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._path = None, None

    def __enter__(self) -> "CsvRowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_csv_pixels(path: str, offset: int) -> str:
    """The pixels field of the CSV row at byte ``offset`` (one-off; see `CsvRowReader` for many)."""
    with CsvRowReader() as reader:
        return reader.pixels(path, offset)


_DIGITS_ONLY = re.compile(r"[0-9\s]*", re.ASCII)
_INT_TOKEN = re.compile(r"[+-]?[0-9]+", re.ASCII)


def parse_pixels(text: str, size: int = 48) -> np.ndarray:
    """FER2013's space-separated grey values -> uint8 array of shape (size, size).

    Raises `BadPixelsError` for a wrong number of values or a value that is not an integer in 0..255.
    """
    tokens = text.split()
    expected = size * size
    if len(tokens) != expected:
        raise BadPixelsError(f"expected {expected} values ({size}x{size}), got {len(tokens)}")
    if _DIGITS_ONLY.fullmatch(text) is None:
        for i, tok in enumerate(tokens):
            if _INT_TOKEN.fullmatch(tok) is None:
                raise BadPixelsError(f"value {i} is {tok[:20]!r}, not a whole number")
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    bad = np.flatnonzero((values < 0) | (values > 255))
    if bad.size:
        raise BadPixelsError(f"value {bad[0]} is {values[bad[0]]}, outside 0..255")
    return values.astype(np.uint8).reshape(size, size)


# ---------------------------------------------------------------------------------------------
# detection and the main entry


def detect_format(path: str | os.PathLike) -> str:
    """Guess the layout of ``path``; the rules, in order:

    1. a file named ``*.csv`` or ``*.csv.gz`` -> ``fer2013-csv``;
    2. a folder whose images directly inside all match the JAFFE pattern (KA.AN1.39.tiff) -> ``jaffe``;
    3. a folder of ``<x>/`` folders that each hold only ``<x>_<something>/`` folders -> ``ferg``;
    4. a folder with a split folder (train, val, test, ...) or a sub-folder named like a label
       (angry, anger, joy, ...) -> ``folder``;
    5. a folder with images directly inside -> ``flat``.

    Anything else raises `FormatDetectionError`; a nested folder of unlabelled images needs an
    explicit ``flat`` so that misspelt class folders are never taken silently as unlabelled data.
    """
    p = Path(path)
    allowed = ", ".join(FORMATS[1:])
    if p.is_file():
        if p.name.lower().endswith((".csv", ".csv.gz")):
            return "fer2013-csv"
        raise FormatDetectionError(f"{p} is a file but not a .csv or .csv.gz; choose a format: {allowed}")
    if not p.is_dir():
        raise SourceNotFoundError(f"source {str(p)!r} does not exist")
    entries = [e for e in sorted(os.scandir(p), key=lambda e: e.name) if not e.name.startswith(".")]
    dirs = [e for e in entries if e.is_dir()]
    images = [e.name for e in entries if e.is_file() and is_image_file(e.name)]

    if images and all(JAFFE_PATTERN.match(n) for n in images):
        return "jaffe"
    if dirs and all(_looks_like_ferg_character(e.path, e.name) for e in dirs):
        return "ferg"
    for e in dirs:
        if e.name.lower() in SPLIT_FOLDER_NAMES:
            return "folder"
        try:
            canonical_label(e.name)
            return "folder"
        except UnknownLabelError:
            pass
    if images:
        return "flat"
    raise FormatDetectionError(
        f"cannot tell the layout of {p}: no label or split folders, no <x>/<x>_<emotion>/ folders "
        f"and no images directly inside; choose a format: {allowed}")


def _looks_like_ferg_character(path: str, name: str) -> bool:
    try:
        subs = [e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return bool(subs) and all(s.lower().startswith(name.lower() + "_") for s in subs)


def list_source(path: str, fmt: str = "auto", spec: DatasetSpec | None = None) -> Listing:
    """List the items of the source at ``path`` in format ``fmt`` (one of `FORMATS`).

    A ``spec`` supplies label spellings, split names and the subject pattern; with ``fmt="auto"``
    its format is used. Without a spec, the CSV format uses the builtin ``fer2013-csv`` description
    (its 0..6 emotion codes). Raises `SourceNotFoundError`, `EmptySourceError`,
    `FormatDetectionError` or `UnknownFormatError`.
    """
    if fmt not in FORMATS:
        raise UnknownFormatError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    src = Path(path)
    if not src.exists():
        raise SourceNotFoundError(f"source {str(path)!r} does not exist")
    if spec is not None:
        if fmt == "auto":
            fmt = spec.format
        elif fmt != spec.format:
            raise UnknownFormatError(f"format {fmt!r} contradicts dataset {spec.name!r}, whose format is "
                                     f"{spec.format!r}; leave the format on auto")
    if fmt == "auto":
        fmt = detect_format(src)
    if spec is None and fmt == "fer2013-csv":
        spec = load_spec("fer2013-csv")
    root = src.resolve()

    if fmt == "fer2013-csv":
        if not root.is_file():
            raise UnknownFormatError(f"format fer2013-csv needs a .csv or .csv.gz file; {path} is a folder")
        failures: list[Failure] = []
        items = _list_csv(str(root), spec, failures)
        looked_for = "CSV rows emotion,pixels[,Usage]"
    else:
        if not root.is_dir():
            raise UnknownFormatError(f"format {fmt} needs a folder; {path} is a file")
        w = _Walker(root)
        lister = {"folder": _list_folder, "ferg": _list_ferg, "jaffe": _list_jaffe, "flat": _list_flat}[fmt]
        items = lister(w, spec)
        failures = w.failures
        looked_for = {
            "folder": "images in ROOT/<label>/ or ROOT/<split>/<label>/ folders",
            "ferg": "images in ROOT/<character>/<character>_<emotion>/ folders",
            "jaffe": "JAFFE-named images (KA.AN1.39.tiff)",
            "flat": "images",
        }[fmt] + f" ({' '.join(IMG_EXTENSIONS)})"
    if not items:
        detail = ""
        if failures:
            shown = "; ".join(f"{f.source}: {f.reason}" for f in failures[:3])
            detail = f"; {len(failures)} entries could not be used, e.g. {shown}"
        raise EmptySourceError(f"no usable items in {path} (format {fmt}); looked for {looked_for}{detail}")
    items.sort(key=order_key)
    failures.sort(key=lambda f: (f.source, f.reason))
    return Listing(format=fmt, root=str(root), items=items, failures=failures, spec=spec)


def count_mismatches(items: list[RawItem], spec: DatasetSpec | None) -> list[str]:
    """Messages for each split whose item count differs from the spec's `expected_counts`."""
    if spec is None or not spec.expected_counts:
        return []
    have = Counter(it.split for it in items)
    return [f"{spec.name}: {have.get(split, 0)} {split} items, expected {n}"
            for split, n in spec.expected_counts.items() if have.get(split, 0) != n]


# ---------------------------------------------------------------------------------------------
# splits for sources without them


def assign_splits(items: list[RawItem], val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0,
                  by_subject: bool = False) -> list[RawItem]:
    """Give a split to every item whose split is None; items with a split keep it.

    Without ``by_subject``: each label's items (unlabelled items as one more group) are shuffled
    with ``seed`` and the first round(n * test_frac) go to test, the next round(n * val_frac) to
    val: exactly stratified, and classes of one or two items simply stay in train. (sklearn's
    stratified splitters refuse classes with fewer than two members, common in small sets.)

    With ``by_subject``: whole subjects go to one split, so no identity is in two splits. sklearn's
    ``StratifiedGroupKFold`` (shuffled, seeded) picks one fold of about 1/round(1/test_frac) of the
    subjects as test, then one fold of the rest as val; it balances the label mix of the folds as
    far as whole subjects allow, so fractions are approximate. With fewer subjects than folds
    each split gets one subject (a warning says so). Pending items of a subject that already has a
    split from the source join that split. Every pending item needs a subject (ValueError if not).

    Returns all items in listing order (`order_key`); deterministic for a given seed.
    """
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not (isinstance(frac, (int, float)) and 0.0 <= frac < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must be below 1 (something must be left for train), "
                         f"got {val_frac} + {test_frac}")
    pending = sorted((it for it in items if it.split is None), key=order_key)
    done = [it for it in items if it.split is not None]
    if pending:
        if by_subject:
            done += _split_by_subject(pending, done, val_frac, test_frac, seed)
        else:
            done += _split_stratified(pending, val_frac, test_frac, seed)
    return sorted(done, key=order_key)


def _split_stratified(pending: list[RawItem], val_frac: float, test_frac: float, seed: int) -> list[RawItem]:
    rng = np.random.default_rng(seed)
    by_label: dict[str | None, list[RawItem]] = {}
    for it in pending:
        by_label.setdefault(it.label, []).append(it)
    out = []
    # a fixed label order (not dict or hash order) keeps the random stream the same on every run
    for label in sorted(by_label, key=lambda x: (x is None, x or "")):
        group = by_label[label]
        perm = rng.permutation(len(group))
        n_test = math.floor(len(group) * test_frac + 0.5)
        n_val = math.floor(len(group) * val_frac + 0.5)
        for rank, idx in enumerate(perm):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out.append(replace(group[idx], split=split))
    return out


def _split_by_subject(pending: list[RawItem], done: list[RawItem], val_frac: float, test_frac: float,
                      seed: int) -> list[RawItem]:
    missing = [it.source_id for it in pending if not it.subject]
    if missing:
        raise ValueError(f"{len(missing)} item(s) have no subject (e.g. {missing[0]}), so they cannot be "
                         "split by subject; give a dataset with a subject pattern or split without subjects")
    # A subject that the source already placed keeps its place (its most common split).
    placed: dict[str, Counter] = {}
    for it in done:
        if it.subject:
            placed.setdefault(it.subject, Counter())[it.split] += 1
    out: list[RawItem] = []
    free: list[RawItem] = []
    for it in pending:
        if it.subject in placed:
            counts = placed[it.subject]
            split = min(counts, key=lambda s: (-counts[s], _SPLIT_RANK[s]))
            out.append(replace(it, split=split))
        else:
            free.append(it)
    if not free:
        return out
    label_code = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
    y = np.array([label_code.get(it.label, -1) for it in free])
    _, groups = np.unique(np.array([it.subject for it in free]), return_inverse=True)
    split_of = np.full(len(free), "train", dtype=object)
    rest = np.arange(len(free))
    rest_frac = 1.0
    for split, frac in (("test", test_frac), ("val", val_frac)):
        if frac <= 0 or rest.size == 0:
            continue
        chosen = _one_group_fold(y[rest], groups[rest], frac / rest_frac, seed, split)
        split_of[rest[chosen]] = split
        rest = rest[~chosen]
        rest_frac -= frac
    out.extend(replace(it, split=str(s)) for it, s in zip(free, split_of))
    return out


def _one_group_fold(y: np.ndarray, groups: np.ndarray, frac: float, seed: int, split: str) -> np.ndarray:
    """Boolean mask of one StratifiedGroupKFold fold holding about ``frac`` of the items."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"cannot make a {split} split by subject: only {n_groups} subject left")
    k = max(2, round(1.0 / frac))
    if k > n_groups:
        warnings.warn(f"only {n_groups} subjects left: the {split} split gets one of them "
                      f"(about {1 / n_groups:.0%} of the items, not {frac:.0%})", stacklevel=4)
        k = n_groups
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "least populated class has fewer members than n_splits": expected with few subjects
        warnings.filterwarnings("ignore", message="The least populated class")
        _, fold = next(cv.split(np.zeros(len(y)), y, groups))
    mask = np.zeros(len(y), dtype=bool)
    mask[fold] = True
    return mask
