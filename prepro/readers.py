"""List the items of a raw face-image source: class folders, the FER2013 CSV, FERG-DB, JAFFE, flat,
and label files (a CSV/TSV/TXT of image paths, labels and optional face boxes: AffectNet, RAF-DB).

Listing only looks at names (and, for the CSV and label files, at each row's fields): decoding
images and pixel strings happens later, in the workers. Every input is accounted for: each file or
row becomes a `RawItem` or a `Failure` with a human-readable reason; only hidden names
(".DS_Store") and blank lines are skipped. Names come from the data: nothing here builds an output
path from them, and nothing outside the source is read.

Problems with the source as a whole raise `prepro.errors.InputError`; a FER2013 row whose pixels
cannot be read or parsed raises `BadPixelsError` (a `SampleError`: that row's failure).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import stat
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np

from prepro.errors import InputError, SampleError
from prepro.inputs import IMG_EXTENSIONS, is_image_file, is_inside, printable, utf8_text
from prepro.labels import CANONICAL_LABELS, UnknownLabelError, canonical_label, label_key, normalize_label_name
from prepro.patterns import search_capped
from prepro.specs import FORMATS, SPLITS, DatasetSpec, load_spec

# FORMATS and SPLITS are defined in prepro.specs and importable from here too.


# Split folder names (compared lower-case) -> split.
SPLIT_FOLDER_NAMES: Mapping[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}

# FER2013's file-name prefixes (Kaggle folders) and Usage values (CSV).
FER2013_SPLIT_NAMES: Mapping[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

# KA.AN1.39.tiff: subject KA, expression AN, picture 1 of it, image number 39; copies found online
# also spell it KA-AN1.jpeg or KA_AN1_39.png (the image number may be missing).
JAFFE_PATTERN = re.compile(r"^([A-Za-z]{2})[._-]([A-Za-z]{2})\d*(?:[._-]\d+)?\.[A-Za-z]+$")

_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}


class SourceNotFoundError(InputError, FileNotFoundError):
    """A source path that does not exist (also a FileNotFoundError, for callers that catch that)."""


class BadPixelsError(SampleError):
    """A FER2013 row whose pixels cannot be read, or are not ``size*size`` integers in 0..255.

    Its own class because the pipeline catches it to list the row as a failure and go on.
    """


@dataclass(frozen=True)
class RawItem:
    """One usable input: an image file, or a row of the FER2013 CSV."""

    # stable id: POSIX path relative to the root (label files: to the image folder), or
    # "<csvname>:row=<n>" (n = 0-based data row)
    source_id: str
    path: str             # absolute path of the file to read (the image, or the CSV file)
    label: str | None     # canonical label, or None when unlabelled
    split: str | None     # "train" | "val" | "test" from the source, or None (assigned later)
    subject: str | None   # identity, for subject-disjoint splits
    offset: int = -1      # CSV only: byte offset of the row's line in the (uncompressed) file; -1 for images
    # face box given by the source (label files): left, top, right, bottom in original-image pixels,
    # right/bottom exclusive, finite, positive size; None when the face is to be found
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Failure:
    """An input that cannot be used, and why."""

    source: str           # source id (or folder) that could not be used
    reason: str           # human-readable reason


@dataclass
class Listing:
    """What `list_source` found: the items, the failures and the description that applied."""

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


def _is_utf8(name: str) -> bool:
    """True when ``name`` holds no undecodable bytes (surrogate escapes)."""
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
        """A walker below the resolved folder ``root``, with no failures yet."""
        self.root = root
        self._root_text = str(root)
        self.failures: list[Failure] = []

    def rel(self, path: str) -> str:
        """``path`` relative to the root, POSIX, printable: the item's source id."""
        prefix = self._root_text.rstrip(os.sep) + os.sep
        # Paths are built by joining names onto the root, so slicing is exact (and 10x cheaper
        # than relpath over tens of thousands of files).
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, self._root_text)
        return utf8_text(rel.replace(os.sep, "/"))

    def fail(self, path: str, reason: str, folder: bool = False) -> None:
        """Record ``path`` (a folder: with a trailing "/") as a failure with ``reason``."""
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
        """"file" for a link to a file inside the root; None (after recording why) otherwise."""
        target = os.path.realpath(path)
        if not os.path.exists(target):
            self.fail(path, "broken symbolic link")
            return None
        if not is_inside(target, self._root_text):
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
    try:
        m = search_capped(spec.subject_pattern, name)
    except ValueError as e:
        return None, f"file name {e} (the subject pattern of dataset {spec.name!r})"
    if m is None or not m.group(1):
        return None, (f"file name does not match the subject pattern {spec.subject_pattern!r} "
                      f"of dataset {spec.name!r}")
    return m.group(1), None


def _label_or_reason(name: str, spec: DatasetSpec | None) -> tuple[str | None, str | None]:
    """(canonical label, None) for a spelling, or (None, the reason it is unknown)."""
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
        raise InputError(f"no class folders in {directory}")
    class_to_idx = {}
    for c in classes:
        try:
            class_to_idx[c] = CANONICAL_LABELS.index(canonical_label(c, extra_aliases))
        except UnknownLabelError:
            pass  # reported per file by the listing, with the allowed labels
    return classes, class_to_idx


def _split_folder_names(spec: DatasetSpec | None) -> dict[str, str]:
    """Split names (lower case) -> split: the usual folder names plus the spec's `split_names`."""
    names = dict(SPLIT_FOLDER_NAMES)
    if spec is not None:
        names.update({k.lower(): v for k, v in spec.split_names.items()})
    return names


def _prefix_pattern(names: Mapping[str, str]) -> re.Pattern[str]:
    """A regex matching ``<name>_`` at the start of a file name, group 1 the name (longest first)."""
    alts = "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))
    return re.compile(rf"^({alts})_")


def _list_folder(w: _Walker, spec: DatasetSpec | None) -> list[RawItem]:
    """Items of ROOT/<label>/* or ROOT/<split>/<label>/* (split also from FER2013 name prefixes)."""
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
    """(image path, label) below each class folder; a folder with an unknown label fails whole."""
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
    """Items of ROOT/<character>/<character>_<emotion>/*; the character is the subject."""
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
    """Items of a folder of JAFFE-named images; label and subject come from the name."""
    items = []
    for path in w.images(str(w.root)):
        name = os.path.basename(path)
        m = JAFFE_PATTERN.match(name)
        if m is None:
            w.fail(path, "name does not match the JAFFE pattern <subject>.<expression><n>.<number>.<ext> "
                         "(e.g. KA.AN1.39.tiff or KA-AN1.jpeg)")
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
    """Unlabelled items: every image below the root."""
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


# What reading a (possibly gzipped) text file can raise: a missing or unreadable file, a file that is
# no gzip (gzip.BadGzipFile is an OSError), a truncated stream (EOFError), corrupt compressed data
# (zlib.error), bytes that are not UTF-8.
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


def _open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading bytes, through gzip when its name ends with ``.gz``."""
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _read_problem(e: BaseException) -> str:
    """What one of `_READ_ERRORS` says about the file, in words."""
    if isinstance(e, gzip.BadGzipFile):
        return f"not a valid gzip file ({e})"
    if isinstance(e, EOFError):
        return "the compressed data ends early (a truncated .gz file)"
    if isinstance(e, zlib.error):
        return f"corrupt compressed data ({e})"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, OSError):
        return f"cannot be read ({e.strerror or e})"
    return f"cannot be read ({type(e).__name__}: {e})"


def _split_fields(line: bytes) -> list[str]:
    """The comma-separated fields of a FER2013 CSV line, stripped; raises UnicodeDecodeError."""
    text = line.decode("utf-8").rstrip("\r\n")
    # FER2013 fields hold no commas; some exports quote them or put a space after the comma
    return [f.strip().strip('"').strip() for f in text.split(",")]


def _csv_columns(header: bytes, path: str) -> dict[str, int]:
    """Column name (lower case) -> index, from the header line; raises `InputError`."""
    try:
        names = [n.lower() for n in _split_fields(header.removeprefix(b"\xef\xbb\xbf"))]
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header line is not UTF-8 text") from None
    cols = {n: i for i, n in enumerate(names) if n}
    missing = [c for c in ("emotion", "pixels") if c not in cols]
    if missing:
        raise InputError(f"{path}: header {header[:80].decode('utf-8', 'replace').strip()!r} lacks "
                             f"column(s) {', '.join(missing)}; expected emotion,pixels[,Usage]")
    return cols


def _list_csv(path: str, spec: DatasetSpec | None, failures: list[Failure]) -> list[RawItem]:
    """The rows of the FER2013 CSV at ``path``; a file that cannot be read raises `InputError`."""
    try:
        return _csv_rows(path, spec, failures)
    except _READ_ERRORS as e:
        raise InputError(f"{path}: {_read_problem(e)}") from None


def _csv_rows(path: str, spec: DatasetSpec | None, failures: list[Failure]) -> list[RawItem]:
    """One streaming pass over the CSV rows: items, and a `Failure` per unusable row."""
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
            raise InputError(f"{path}: empty file; expected a header emotion,pixels[,Usage] and rows")
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
        """A reader with no file open yet."""
        self._path: str | None = None
        self._fh: IO[bytes] | None = None
        self._header_len = 0
        self._pixels_col = 0
        # (path, offset, message) of the first read that failed: a damaged stream stays damaged
        # from there on, so later rows fail at once instead of decompressing it again each time
        self._broken: tuple[str, int, str] | None = None

    def pixels(self, path: str, offset: int) -> str:
        """The pixels field of the row whose line starts at byte ``offset`` (of the uncompressed
        stream, as recorded in `RawItem.offset`).

        Raises `BadPixelsError` if there is no such row or the file cannot be read there (missing,
        not gzip, truncated, corrupt, a damaged header): never an OSError or EOFError.
        """
        if self._broken and self._broken[0] == path and offset >= self._broken[1]:
            raise BadPixelsError(self._broken[2])
        try:
            line = self._line_at(path, offset)
        except _READ_ERRORS as e:
            self.close()
            message = f"{path}: cannot read the row at byte offset {offset}: {_read_problem(e)}"
            self._broken = (path, offset, message)
            raise BadPixelsError(message) from None
        except InputError as e:  # the header cannot be used (changed since listing)
            self.close()
            raise BadPixelsError(str(e)) from None
        try:
            fields = _split_fields(line)
        except UnicodeDecodeError:
            raise BadPixelsError(f"{path}: the row at byte offset {offset} is not UTF-8 text") from None
        if len(fields) <= self._pixels_col:
            raise BadPixelsError(f"{path}: no pixels field in the row at byte offset {offset}")
        return fields[self._pixels_col]

    def _line_at(self, path: str, offset: int) -> bytes:
        """The raw line at byte ``offset`` of ``path``, opening the file (and reading its header)
        when it is not the one open."""
        if path != self._path:
            self.close()
            self._fh = _open_binary(path)
            self._path = path
            header = self._fh.readline()
            self._pixels_col = _csv_columns(header, path)["pixels"]
            self._header_len = len(header)
        if offset < self._header_len:
            raise BadPixelsError(f"{path}: byte offset {offset} is inside the header, not at a row")
        if self._fh.tell() != offset:
            self._fh.seek(offset)  # gzip: forward seeks decompress only the gap
        return self._fh.readline()

    def close(self) -> None:
        """Close the open file, if any."""
        if self._fh is not None:
            self._fh.close()
        self._fh, self._path = None, None

    def __enter__(self) -> "CsvRowReader":
        """The reader itself; it is closed on leaving the ``with`` block."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the open file."""
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
# labels: a label file (CSV, TSV or whitespace-separated) of image paths, labels, optional splits,
# subjects and face boxes (AffectNet, RAF-DB, ExpW, ...)

LABEL_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")

# Header names recognised without a dataset description, per column role; compared after
# `normalize_label_name` (lower case, without spaces, "_" and "-": "subDirectory_filePath" ->
# "subdirectoryfilepath").
LABEL_FILE_HEADER_NAMES: Mapping[str, frozenset[str]] = {
    "path": frozenset({"path", "image", "img", "file", "filename", "filepath", "imagepath", "imagename",
                       "imagefile", "imgpath", "imgname", "subdirectoryfilepath"}),
    "label": frozenset({"label", "expression", "emotion", "class", "category", "emotionlabel",
                        "expressionlabel"}),
    "split": frozenset({"split", "usage", "partition", "subset"}),
    "subject": frozenset({"subject", "identity", "person", "subjectid", "personid", "identityid"}),
}

# Face-box header names per box format, one set per value in the format's order.
BOX_HEADER_NAMES: Mapping[str, tuple[frozenset[str], ...]] = {
    "xywh": (frozenset({"x", "facex", "boxx", "bboxx"}), frozenset({"y", "facey", "boxy", "bboxy"}),
             frozenset({"width", "w", "facewidth", "facew", "boxwidth", "bboxwidth"}),
             frozenset({"height", "h", "faceheight", "faceh", "boxheight", "bboxheight"})),
    "ltrb": (frozenset({"left", "faceleft", "boxleft", "x1", "xmin"}),
             frozenset({"top", "facetop", "boxtop", "y1", "ymin"}),
             frozenset({"right", "faceright", "boxright", "x2", "xmax"}),
             frozenset({"bottom", "facebottom", "boxbottom", "y2", "ymax"})),
}

_KNOWN_HEADER_NAMES = frozenset().union(*LABEL_FILE_HEADER_NAMES.values(),
                                        *(n for sets in BOX_HEADER_NAMES.values() for n in sets))

# A decimal number as float() reads it, without nan/inf (checked before float(), which would raise).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class _LabelFileLayout:
    """Where the columns of one label file are, and how its lines split into fields."""

    delimiter: str                          # one character, or "" for runs of whitespace
    header: bool                            # the first line names the columns (and is no row)
    path: int                               # 0-based column of the image path
    label: int | None                       # column of the label; None: unlabelled rows
    split: int | None                       # column of the split name; None: split from elsewhere
    subject: int | None                     # column of the subject; None: no subject column
    box: tuple[int, int, int, int] | None   # face-box columns in `box_format` order; None: no box
    box_format: str                         # "xywh" | "ltrb"; "" without a box
    min_fields: int = 0                     # fields a row needs so that every used column is there

    def __post_init__(self) -> None:
        """Compute `min_fields` from the columns (once, not per row)."""
        used = [self.path, self.label, self.split, self.subject, *(self.box or ())]
        object.__setattr__(self, "min_fields", max(i for i in used if i is not None) + 1)


def _first_line(path: Path) -> str:
    """The first line of a (possibly gzipped) text file, for format detection: decoded with
    replacement characters, without a byte-order mark; `InputError` if the file cannot be read."""
    try:
        with _open_binary(str(path)) as fh:
            line = fh.readline(1 << 20)
    except _READ_ERRORS as e:
        raise InputError(f"{path}: {_read_problem(e)}") from None
    return line.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").rstrip("\r\n")


def _auto_delimiter(line: str) -> str:
    """The delimiter of a label file from its first line: tab, else comma, else semicolon, else
    runs of whitespace ("")."""
    for candidate in ("\t", ",", ";"):
        if candidate in line:
            return candidate
    return ""


def _split_line(text: str, delimiter: str) -> list[str]:
    """The stripped fields of one label-file line; quoted fields are read the CSV way.

    Raises `csv.Error` for a line the csv module cannot parse.
    """
    if not delimiter:
        return text.split()
    if '"' not in text:
        return [f.strip() for f in text.split(delimiter)]
    return [f.strip() for f in next(csv.reader([text], delimiter=delimiter), [""])]


def _looks_like_header(fields: list[str]) -> bool:
    """True when ``fields`` name columns: a known column name and no image file name among them."""
    if any(is_image_file(f) for f in fields):
        return False
    return any(normalize_label_name(f) in _KNOWN_HEADER_NAMES for f in fields)


def _looks_like_label_file(line: str) -> bool:
    """True when ``line`` is unmistakably the first line of a label file: a header naming an
    image-path column, or an image file name followed by at least one more field."""
    try:
        fields = _split_line(line, _auto_delimiter(line))
    except csv.Error:
        return False
    if _looks_like_header(fields):
        return any(normalize_label_name(f) in LABEL_FILE_HEADER_NAMES["path"] for f in fields)
    return len(fields) >= 2 and is_image_file(fields[0])


def _column_index(ref: str | int, names: list[str] | None, shown: str) -> int:
    """The 0-based index of the column ``ref`` (an index, or a header name matched ignoring case)."""
    if isinstance(ref, int):
        return ref
    if names is None:
        raise InputError(f"{shown}: column {ref!r} is named, but the file has no header line")
    lowered = [n.strip().lower() for n in names]
    if ref.lower() not in lowered:
        raise InputError(f"{shown}: no column {ref!r} in the header ({_shown_names(names)})")
    return lowered.index(ref.lower())


def _shown_names(names: list[str], limit: int = 12) -> str:
    """A header's column names for a message: the first few, each cut short (a binary or
    pixel-per-column file would otherwise make a message of many kilobytes)."""
    shown = [printable(n if len(n) <= 40 else n[:37] + "...") for n in names[:limit]]
    return ", ".join(shown) + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def _header_columns(names: list[str], shown: str) -> dict[str, int]:
    """Column role -> index, recognised from the header ``names`` (`LABEL_FILE_HEADER_NAMES`)."""
    found: dict[str, int] = {}
    for role, known in LABEL_FILE_HEADER_NAMES.items():
        hits = [i for i, n in enumerate(names) if normalize_label_name(n) in known]
        if len(hits) > 1:
            raise InputError(f"{shown}: columns {', '.join(repr(names[i]) for i in hits)} could each be "
                             f"the {role}; name the columns in a dataset description ('columns')")
        if hits:
            found[role] = hits[0]
    is_csv = shown.lower().endswith((".csv", ".csv.gz"))
    hint = "; a FER2013 CSV needs emotion,pixels[,Usage]" if is_csv else ""
    for role in ("path", "label"):
        if role not in found:
            raise InputError(
                f"{shown}: no {role} column in the header ({_shown_names(names)}); recognised names: "
                f"{', '.join(sorted(LABEL_FILE_HEADER_NAMES[role]))}, or name the columns in a dataset "
                f"description ('columns'){hint}")
    return found


def _header_box(names: list[str], shown: str) -> tuple[tuple[int, int, int, int] | None, str]:
    """Face-box columns and format recognised from the header ``names`` (`BOX_HEADER_NAMES`)."""
    normalized = [normalize_label_name(n) for n in names]
    for box_format, sets in BOX_HEADER_NAMES.items():
        hits = [[i for i, n in enumerate(normalized) if n in known] for known in sets]
        if not any(hits):
            continue
        if not all(len(h) == 1 for h in hits):
            raise InputError(f"{shown}: the header ({', '.join(names)}) names part of a face box "
                             f"({box_format}); give all four columns once, or 'box_columns' in a "
                             "dataset description")
        return (hits[0][0], hits[1][0], hits[2][0], hits[3][0]), box_format
    return None, ""


def _label_file_layout(first: str, spec: DatasetSpec | None, shown: str,
                       split_elsewhere: bool) -> _LabelFileLayout:
    """Where each column of a label file is, from its first line and the dataset description.

    ``split_elsewhere``: the description takes the split from the file name or prefix, so a split
    column found in the header is not used.
    """
    delimiter = spec.delimiter if spec is not None else "auto"
    if delimiter == "auto":
        delimiter = _auto_delimiter(first)
    elif delimiter == "whitespace":
        delimiter = ""
    fields = _split_line(first, delimiter) if first else []
    columns = dict(spec.columns) if spec is not None else {}
    box_refs = spec.box_columns if spec is not None else ()
    if spec is not None and spec.header is not None:
        header = spec.header
    elif any(isinstance(r, str) for r in (*columns.values(), *box_refs)):
        header = True
    else:
        header = _looks_like_header(fields)
    if header and "\ufffd" in first:  # decoded with replacement: the names cannot be trusted
        raise InputError(f"{shown}: the header line is not UTF-8 text")
    names = fields if header else None
    box, box_format = None, ""
    if columns:
        cols = {role: _column_index(ref, names, shown) for role, ref in columns.items()}
    elif header:
        cols = _header_columns(fields, shown)
        if not box_refs:
            box, box_format = _header_box(fields, shown)
    else:
        cols = {"path": 0, "label": 1}
    if box_refs:
        box = tuple(_column_index(ref, names, shown) for ref in box_refs)
        box_format = spec.box_format
    if split_elsewhere:
        cols.pop("split", None)
    return _LabelFileLayout(delimiter, header, cols["path"], cols.get("label"), cols.get("split"),
                            cols.get("subject"), box, box_format)


def _relative_image_path(text: str, roots: tuple[str, ...] = ()) -> tuple[str | None, str | None]:
    """A listed image path as a normalised POSIX path inside the image folder, or (None, reason).

    Backslashes count as separators; "." and empty parts are dropped; ".." is refused, and so is an
    absolute path or drive letter unless it lies below one of ``roots`` (the image folder named
    with --image-root, as given and as its real path), so nothing outside the image folder is
    ever named.
    """
    if not text:
        return None, "missing image path"
    if "\0" in text:
        return None, "bad image path: it holds a NUL character"
    posix = text.replace("\\", "/")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, f"path outside the image folder: {text!r} goes up with '..'"
    if posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        inside = _below_a_root("/" + "/".join(parts), roots)
        if inside is None:
            return None, (f"path outside the image folder: {text!r} is absolute and not inside it" if roots else
                          f"path outside the image folder: {text!r} is absolute; paths must be relative to it "
                          "(or name the folder that holds them with --image-root DIR)")
        parts = inside.split("/")
    if not parts:
        return None, f"bad image path: {text!r} names no file"
    return "/".join(parts), None


def _below_a_root(absolute: str, roots: tuple[str, ...]) -> str | None:
    """``absolute`` relative to the first of ``roots`` it lies below, or None."""
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if absolute.startswith(prefix):
            return absolute[len(prefix):]
    return None


def _parse_box(values: list[str], box_format: str
               ) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """(left, top, right, bottom) from four box fields in ``box_format``, or (None, reason); four
    empty fields are no box (None, None): that row's face is found as any other image's."""
    values = [v.strip() for v in values]
    if not any(values):
        return None, None
    if not all(values):
        return None, "incomplete face box: some box columns are empty (leave all four empty to have the face found)"
    for v in values:
        if _NUMBER.fullmatch(v) is None:
            return None, f"bad face box: {v[:20]!r} is not a number"
    a, b, c, d = (float(v) for v in values)
    if not all(math.isfinite(x) for x in (a, b, c, d)):
        return None, "bad face box: a value is too large"
    if box_format == "xywh":
        if c <= 0 or d <= 0:
            return None, f"bad face box: width {c:g} and height {d:g} must be positive"
        c, d = a + c, b + d
    elif c <= a or d <= b:
        return None, f"bad face box: right {c:g} and bottom {d:g} must exceed left {a:g} and top {b:g}"
    if not (math.isfinite(c) and math.isfinite(d)):
        return None, "bad face box: a value is too large"
    return (a, b, c, d), None


class _LabelFileLister:
    """Lists the rows of one or more label files against one image folder.

    Remembers the image paths already listed (a second listing is a failure), the real path of
    each sub-folder (so a link out of the image folder is refused once per folder, not per row),
    and each label spelling's meaning.
    """

    def __init__(self, image_root: str, root_shown: str, spec: DatasetSpec | None,
                 failures: list[Failure], absolute_roots: tuple[str, ...] = ()) -> None:
        """``image_root``: the real path of the image folder; ``root_shown``: how messages name it;
        ``absolute_roots``: the spellings of the folder absolute paths may start with (none: an
        absolute path is refused)."""
        self.root = image_root
        self.absolute_roots = absolute_roots
        self.root_shown = root_shown
        self.spec = spec
        self.failures = failures
        self._inside = image_root.rstrip(os.sep) + os.sep
        self._seen: dict[str, str] = {}                         # image path -> "file line N"
        self._real_dirs: dict[str, str | None] = {"": image_root}  # sub-folder -> real path (None: outside)
        self._labels: dict[str, tuple[str | None, str | None]] = {}
        self._split_names = {k.lower(): v for k, v in FER2013_SPLIT_NAMES.items()}
        self._split_names.update(_split_folder_names(spec))
        self._non_expressions = {label_key(k): v
                                 for k, v in (spec.non_expression_labels if spec else {}).items()}
        by_prefix = spec is not None and spec.split_from_filename_prefix
        self._prefix_re = _prefix_pattern(spec.split_names) if by_prefix else None

    def list_file(self, path: str, shown: str, file_split: str | None) -> list[RawItem]:
        """The items of the label file at ``path`` (``shown`` in messages); ``file_split`` is the
        split its name gives, if any. Rows that cannot be used become failures."""
        split_elsewhere = file_split is not None or self._prefix_re is not None
        items: list[RawItem] = []
        layout: _LabelFileLayout | None = None
        for n, line in _label_file_lines(path, shown):
            if layout is None:
                if not line.strip():
                    continue
                first = line.decode("utf-8", "replace")
                try:
                    layout = _label_file_layout(first, self.spec, shown, split_elsewhere)
                except csv.Error as e:  # without a readable first line no column can be found
                    self.failures.append(Failure(shown, f"line {n} cannot be read as a label file line ({e})"))
                    return items
                if layout.header:
                    continue
            item = self._row(n, line, layout, shown, file_split)
            if item is not None:
                items.append(item)
        if layout is None:
            self.failures.append(Failure(shown, "empty label file: no header and no rows"))
        return items

    def _row(self, n: int, line: bytes, layout: _LabelFileLayout, shown: str,
             file_split: str | None) -> RawItem | None:
        """The item of line ``n``, or None after recording its failure (or for a blank line)."""
        where = f"{shown} line {n}"
        line_id = f"{shown}:line={n}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail(line_id, f"not UTF-8 text ({where})")
        if not text.strip():
            return None  # a blank line holds no row
        try:
            fields = _split_line(text, layout.delimiter)
        except csv.Error as e:
            return self._fail(line_id, f"malformed line: {e} ({where})")
        if len(fields) < layout.min_fields:
            return self._fail(line_id, f"too few columns: {len(fields)}, expected at least "
                                       f"{layout.min_fields} ({where})")
        rel, why = _relative_image_path(fields[layout.path], self.absolute_roots)
        if rel is None:
            return self._fail(line_id, f"{why} ({where})")
        rel = self._with_suffix(rel)
        if rel in self._seen:
            return self._fail(rel, f"listed twice: first at {self._seen[rel]} ({where})")
        self._seen[rel] = where
        return self._item(rel, fields, layout, where, file_split)

    def _item(self, rel: str, fields: list[str], layout: _LabelFileLayout, where: str,
              file_split: str | None) -> RawItem | None:
        """The item for image ``rel`` from the row's ``fields``, or None after recording why not."""
        if not is_image_file(rel):
            ext = os.path.splitext(rel)[1]
            what = f"extension {ext}" if ext else "no extension"
            return self._fail(rel, f"not an image file: {what} ({where})")
        label, why = self._label(fields[layout.label]) if layout.label is not None else (None, None)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        split, why = self._split(rel, fields, layout, file_split)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        subject, why = self._subject(rel, fields, layout)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        box = None
        if layout.box is not None:
            box, why = _parse_box([fields[i] for i in layout.box], layout.box_format)
            if why is not None:
                return self._fail(rel, f"{why} ({where})")
        path, why = self._image_file(rel)  # last: the only check that touches the disk
        if path is None:
            return self._fail(rel, f"{why} ({where})")
        return RawItem(rel, path, label, split, subject, box=box)

    def _fail(self, source: str, reason: str) -> None:
        """Record a failure; returns None for the caller to return."""
        self.failures.append(Failure(source, reason))
        return None

    def _with_suffix(self, rel: str) -> str:
        """``rel`` with the description's `image_name_suffix` put before the extension."""
        suffix = self.spec.image_name_suffix if self.spec is not None else ""
        if not suffix:
            return rel
        stem, ext = os.path.splitext(rel)
        return stem + suffix + ext

    def _label(self, text: str) -> tuple[str | None, str | None]:
        """(canonical label, None) or (None, reason) for a label field; cached per spelling."""
        if text not in self._labels:
            meaning = self._non_expressions.get(label_key(text))
            if not text:
                self._labels[text] = (None, "missing label")
            elif meaning is not None:
                self._labels[text] = (None, f"not an expression: label {text!r} means {meaning!r}")
            else:
                self._labels[text] = _label_or_reason(text, self.spec)
        return self._labels[text]

    def _split(self, rel: str, fields: list[str], layout: _LabelFileLayout,
               file_split: str | None) -> tuple[str | None, str | None]:
        """(split or None, None) or (None, reason): from the split column, the file-name prefix,
        or the label file's name, whichever the layout and description say."""
        if layout.split is not None:
            value = fields[layout.split]
            if not value:
                return None, "missing split"
            split = self._split_names.get(value.lower())
            if split is None:
                return None, (f"unknown split {value[:40]!r}; allowed: "
                              f"{', '.join(sorted(self._split_names))}")
            return split, None
        if self._prefix_re is not None:
            m = self._prefix_re.match(rel.rsplit("/", 1)[-1])
            if m is None:
                return None, ("file name has no split prefix (expected one of "
                              f"{', '.join(k + '_' for k in self.spec.split_names)})")
            return self.spec.split_names[m.group(1)], None
        return file_split, None

    def _subject(self, rel: str, fields: list[str], layout: _LabelFileLayout
                 ) -> tuple[str | None, str | None]:
        """(subject or None, None) from the subject column or the subject pattern, or (None, reason)."""
        if layout.subject is not None:
            return fields[layout.subject] or None, None
        return _subject_from_name(rel.rsplit("/", 1)[-1], self.spec)

    def _image_file(self, rel: str) -> tuple[str | None, str | None]:
        """(absolute path, None) of the regular file ``rel`` inside the image folder, or (None,
        reason): missing, not a regular file, or reached through a link that leads outside."""
        folder, _, name = rel.rpartition("/")
        if folder not in self._real_dirs:
            real = os.path.realpath(os.path.join(self.root, folder))
            self._real_dirs[folder] = real if real == self.root or real.startswith(self._inside) else None
        real_folder = self._real_dirs[folder]
        if real_folder is None:
            return None, "symbolic link to a place outside the source folder; not followed"
        path = os.path.join(real_folder, name)
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(path)
                if not (target == self.root or target.startswith(self._inside)):
                    return None, "symbolic link to a place outside the source folder; not followed"
                st = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            return None, f"image file not found: {self.root_shown}/{rel}"
        except OSError as e:
            return None, f"image file cannot be examined: {e.strerror or e}"
        if not stat.S_ISREG(st.st_mode):
            return None, f"not a regular file: {self.root_shown}/{rel}"
        return path, None


def _label_file_lines(path: str, shown: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end and byte-order mark) of a (possibly gzipped)
    label file; a file that cannot be read raises `InputError` naming ``shown``."""
    try:
        with _open_binary(path) as fh:
            for n, line in enumerate(fh, 1):
                if n == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")
                yield n, line.rstrip(b"\r\n")
    except _READ_ERRORS as e:
        raise InputError(f"{shown}: {_read_problem(e)}") from None


def _file_stem(name: str) -> str:
    """A label file's name without folder and extension(s): "lists/training.csv.gz" -> "training"."""
    base = name.rsplit("/", 1)[-1]
    base = base[:-3] if base.lower().endswith(".gz") else base
    return os.path.splitext(base)[0]


def _label_files_of(root: Path, spec: DatasetSpec | None) -> tuple[Path, list[tuple[str, str]]]:
    """(base folder, [(label file path, name shown in messages)]) for a label-file source.

    ``root`` is the resolved SOURCE: the label file itself (its folder is the base), or a folder
    whose description names `label_files` relative to it. Raises `InputError` when they do not fit
    or a named file is missing or lies outside SOURCE.
    """
    if root.is_file():
        if spec is not None and spec.label_files:
            raise InputError(f"dataset {spec.name!r} names its label files ({', '.join(spec.label_files)}) "
                             f"relative to a folder: give that folder as SOURCE, not the file {root}")
        return root.parent, [(str(root), root.name)]
    if spec is None or not spec.label_files:
        raise InputError(f"format labels needs a label file as SOURCE, or a folder with a dataset "
                         f"description that names its 'label_files'; {root} is a folder")
    files = []
    for rel in spec.label_files:
        path = root / rel
        if not path.is_file():
            raise InputError(f"label file {rel} not found in {root} (dataset {spec.name!r} expects it there)")
        if not is_inside(path, root):
            raise InputError(f"label file {rel} in {root} is a link to a place outside the source; "
                             "not followed")
        files.append((str(path), rel))
    return root, files


def _file_split(shown: str, spec: DatasetSpec | None) -> str | None:
    """The split a label file's name gives when the description says so (`split_from_label_file`)."""
    if spec is None or not spec.split_from_label_file:
        return None
    stem = _file_stem(shown)
    names = {k.lower(): v for k, v in spec.split_names.items()}
    if stem.lower() not in names:
        raise InputError(f"label file {shown}: its name {stem!r} is not in split_names of dataset "
                         f"{spec.name!r} ({', '.join(spec.split_names)})")
    return names[stem.lower()]


def _list_labels(root: Path, spec: DatasetSpec | None, failures: list[Failure],
                 image_root: str | None = None) -> list[RawItem]:
    """The items of a label-file source (see `_label_files_of`); rows that cannot be used are
    appended to ``failures``. Image paths are relative to ``image_root`` (--image-root: absolute
    paths inside it are taken too), else to the description's `image_root`, else to the label
    file's folder."""
    base, files = _label_files_of(root, spec)
    if image_root is not None:
        folder, root_shown = Path(image_root), str(image_root)
        if not folder.is_dir():
            raise InputError(f"--image-root {root_shown} is not a folder")
        spellings = tuple(dict.fromkeys(Path(p).as_posix() for p in (os.path.abspath(folder),
                                                                     os.path.realpath(folder))))
    else:
        folder, root_shown, spellings = _described_image_folder(base, spec)
    splits = [_file_split(shown, spec) for _, shown in files]  # every name checked before reading
    lister = _LabelFileLister(os.path.realpath(folder), root_shown, spec, failures, spellings)
    items: list[RawItem] = []
    for (path, shown), split in zip(files, splits):
        items += lister.list_file(path, shown, split)
    return items


def _described_image_folder(base: Path, spec: DatasetSpec | None) -> tuple[Path, str, tuple[str, ...]]:
    """(image folder, its name in messages, no absolute spellings) of a label-file source without
    --image-root: the description's `image_root` inside SOURCE, or SOURCE's folder."""
    root_shown = spec.image_root if spec is not None and spec.image_root else "."
    folder = base / spec.image_root if spec is not None and spec.image_root else base
    if not folder.is_dir():
        raise InputError(f"image folder {root_shown} not found in {base}"
                         + (f" (image_root of dataset {spec.name!r})" if spec is not None else ""))
    if not is_inside(folder, base):
        raise InputError(f"image folder {root_shown} in {base} is a link to a place outside the source; "
                         "not followed")
    return folder, root_shown, ()


# ---------------------------------------------------------------------------------------------
# detection and the main entry


def detect_format(path: str | os.PathLike) -> str:
    """Guess the layout of ``path``; the rules, in order:

    1. a file named ``*.csv`` or ``*.csv.gz`` -> ``fer2013-csv`` when its header has a ``pixels``
       column, else ``labels``;
    1b. a file named ``*.tsv`` or ``*.txt`` (also ``.gz``) -> ``labels`` when its first line is a
       header naming an image-path column, or a row whose first field is an image file name
       followed by a label;
    2. a folder whose images directly inside all match the JAFFE pattern (KA.AN1.39.tiff) -> ``jaffe``;
    3. a folder of ``<x>/`` folders that each hold only ``<x>_<something>/`` folders -> ``ferg``;
    4. a folder with a split folder (train, val, test, ...) or a sub-folder named like a label
       (angry, anger, joy, ...) -> ``folder``;
    5. a folder with images directly inside -> ``flat``.

    Anything else raises `InputError`; a nested folder of unlabelled images needs an explicit
    ``flat`` so that misspelt class folders are never taken silently as unlabelled data. A file that
    cannot be read raises `InputError` naming it; a missing path `SourceNotFoundError`.
    """
    p = Path(path)
    allowed = ", ".join(FORMATS[1:])
    if p.is_file():
        return _detect_file_format(p, allowed)
    if not p.is_dir():
        raise SourceNotFoundError(f"source {str(p)!r} does not exist")
    try:
        entries = [e for e in sorted(os.scandir(p), key=lambda e: e.name) if not e.name.startswith(".")]
    except OSError as e:
        raise InputError(f"{p}: the folder cannot be read ({e.strerror or e})") from None
    dirs = [e for e in entries if e.is_dir()]
    images = [e.name for e in entries if e.is_file() and is_image_file(e.name)]

    if images and all(JAFFE_PATTERN.match(n) for n in images):
        return "jaffe"
    if dirs and not images and _class_folders_of_jaffe_names(dirs):
        return "jaffe"  # JAFFE sorted into class folders: the names still carry subject and label
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
    raise InputError(
        f"cannot tell the layout of {p}: no label or split folders, no <x>/<x>_<emotion>/ folders "
        f"and no images directly inside; choose a format: {allowed}")


def _detect_file_format(p: Path, allowed: str) -> str:
    """The format of the file ``p``: the FER2013 CSV or a label file (rules 1 and 1b of
    `detect_format`); raises `InputError` when it is neither."""
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        names = [normalize_label_name(f.strip().strip('"')) for f in _first_line(p).split(",")]
        return "fer2013-csv" if "pixels" in names else "labels"
    if name.endswith(LABEL_FILE_SUFFIXES):
        if _looks_like_label_file(_first_line(p)):
            return "labels"
        raise InputError(f"{p}: cannot tell whether this is a label file (its first line is neither a "
                         "header naming an image-path column nor '<image file> <label>'); give "
                         "--format labels with a dataset description, or choose a format: " + allowed)
    raise InputError(f"{p} is a file but not a .csv, .csv.gz, .tsv or .txt; choose a format: {allowed}")


def _class_folders_of_jaffe_names(dirs: list) -> bool:
    """True when every folder holds only images (at least one in all), each named as JAFFE's are."""
    names = []
    for d in dirs:
        try:
            entries = [e for e in os.scandir(d.path) if not e.name.startswith(".")]
        except OSError:
            return False
        if any(not e.is_file() for e in entries):
            return False
        names += [e.name for e in entries if is_image_file(e.name)]
    return bool(names) and all(JAFFE_PATTERN.match(n) for n in names)


def _looks_like_ferg_character(path: str, name: str) -> bool:
    """True when every sub-folder of ``path`` is named ``<name>_<something>`` (a FERG character)."""
    try:
        subs = [e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return bool(subs) and all(s.lower().startswith(name.lower() + "_") for s in subs)


def list_source(path: str, fmt: str = "auto", spec: DatasetSpec | None = None,
                image_root: str | None = None) -> Listing:
    """List the items of the source at ``path`` in format ``fmt`` (one of `FORMATS`).

    A ``spec`` supplies label spellings, split names and the subject pattern (and, for label files,
    where the files, images and columns are); with ``fmt="auto"`` its format is used. Without a
    spec, the CSV format uses the builtin ``fer2013-csv`` description (its 0..6 emotion codes).
    ``image_root`` is the folder a label file's image paths are relative to (label files only).
    Raises `SourceNotFoundError` for a missing source and `InputError` for a source that cannot be
    listed (unknown or contradicting format, unreadable file, nothing usable in it).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    src = Path(path)
    if not src.exists():
        raise SourceNotFoundError(f"source {str(path)!r} does not exist")
    if spec is not None:
        if fmt == "auto":
            fmt = spec.format
        elif fmt != spec.format:
            raise InputError(f"format {fmt!r} contradicts dataset {spec.name!r}, whose format is "
                                     f"{spec.format!r}; leave the format on auto")
    if fmt == "auto":
        fmt = detect_format(src)
    if spec is None and fmt == "fer2013-csv":
        spec = load_spec("fer2013-csv")
    root = src.resolve()
    if image_root is not None and fmt != "labels":
        raise InputError(f"--image-root only applies to label files; {path} is read as format {fmt}")

    failures: list[Failure] = []
    if fmt == "fer2013-csv":
        if not root.is_file():
            raise InputError(f"format fer2013-csv needs a .csv or .csv.gz file; {path} is a folder")
        items = _list_csv(str(root), spec, failures)
        looked_for = "CSV rows emotion,pixels[,Usage]"
    elif fmt == "labels":
        items = _list_labels(root, spec, failures, image_root)
        looked_for = "rows naming an existing image file (and its label) in the label file(s)"
    else:
        if not root.is_dir():
            raise InputError(f"format {fmt} needs a folder; {path} is a file")
        w = _Walker(root)
        lister = {"folder": _list_folder, "ferg": _list_ferg, "jaffe": _list_jaffe, "flat": _list_flat}[fmt]
        items = lister(w, spec)
        failures = w.failures
        looked_for = {
            "folder": "images in ROOT/<label>/ or ROOT/<split>/<label>/ folders",
            "ferg": "images in ROOT/<character>/<character>_<emotion>/ folders",
            "jaffe": "JAFFE-named images (KA.AN1.39.tiff, KA-AN1.jpeg)",
            "flat": "images",
        }[fmt] + f" ({' '.join(IMG_EXTENSIONS)})"
    if not items:
        detail = ""
        if failures:
            shown = "; ".join(f"{f.source}: {f.reason}" for f in failures[:3])
            detail = f"; {len(failures)} entries could not be used, e.g. {shown}"
        raise InputError(f"no usable items in {path} (format {fmt}); looked for {looked_for}{detail}")
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
    split from the source join that split. Every pending item needs a subject (InputError if not);
    bad fractions raise InputError too.

    Returns all items in listing order (`order_key`); deterministic for a given seed.
    """
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not (isinstance(frac, (int, float)) and 0.0 <= frac < 1.0):
            raise InputError(f"{name} must be in [0, 1), got {frac!r}")
    if val_frac + test_frac >= 1.0:
        raise InputError(f"val_frac + test_frac must be below 1 (something must be left for train), "
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
    """``pending`` with splits drawn per label (see `assign_splits`)."""
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
    """``pending`` with splits by whole subjects (see `assign_splits`)."""
    missing = [it.source_id for it in pending if not it.subject]
    if missing:
        raise InputError(f"{len(missing)} item(s) have no subject (e.g. {missing[0]}), so they cannot be "
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
        raise InputError(f"cannot make a {split} split by subject: only {n_groups} subject left")
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
