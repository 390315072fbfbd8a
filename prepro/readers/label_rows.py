"""The rows of a label file as items: the image path kept inside the image folder, the face box,
the label, split and subject each row gives.
"""

from __future__ import annotations

import csv
import math
import os
import re
import stat
from collections.abc import Iterator

from prepro.errors import InputError
from prepro.inputs import is_image_file
from prepro.labels import label_key
from prepro.readers.label_columns import LabelFileLayout, label_file_layout, split_line
from prepro.readers.names import FER2013_SPLIT_NAMES, label_or_reason, prefix_pattern, split_folder_names, subject_from_name
from prepro.readers.records import Failure, RawItem
from prepro.readers.text_files import READ_ERRORS, open_binary, read_problem
from prepro.specs import DatasetSpec


# A decimal number as float() reads it, without nan/inf (checked before float(), which would raise).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


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


def _parse_values(cells: list[tuple[str, str]]) -> tuple[tuple[tuple[str, float], ...], str | None]:
    """((name, value), ...) of a row's valence and arousal cells, NaN for an empty one (not given),
    or ((), reason) for a cell that is no number in -1..1 (nan and inf are not numbers here)."""
    values = []
    for name, text in cells:
        text = text.strip()
        if not text:
            values.append((name, math.nan))
            continue
        if _NUMBER.fullmatch(text) is None:
            return (), f"bad {name}: {text[:20]!r} is not a number"
        value = float(text)
        if not -1 <= value <= 1:
            return (), f"bad {name}: {value:g} is outside -1..1"
        values.append((name, value))
    return tuple(values), None


class LabelFileLister:
    """Lists the rows of one or more label files against one image folder.

    Remembers the image paths already listed (a second listing is a failure); the image folder
    (`_ImageFolder`) and the meaning of each row's fields (`_RowMeanings`) are their own classes.
    """

    def __init__(self, image_root: str, root_shown: str, spec: DatasetSpec | None,
                 failures: list[Failure], absolute_roots: tuple[str, ...] = ()) -> None:
        """``image_root``: the real path of the image folder; ``root_shown``: how messages name it;
        ``absolute_roots``: the spellings of the folder absolute paths may start with (none: an
        absolute path is refused)."""
        self.absolute_roots = absolute_roots
        self.spec = spec
        self.failures = failures
        self.folder = _ImageFolder(image_root, root_shown)
        self.meanings = _RowMeanings(spec)
        self._seen: dict[str, str] = {}                         # image path -> "file line N"

    def list_file(self, path: str, shown: str, file_split: str | None) -> list[RawItem]:
        """The items of the label file at ``path`` (``shown`` in messages); ``file_split`` is the
        split its name gives, if any. Rows that cannot be used become failures."""
        split_elsewhere = file_split is not None or self.meanings.prefix_re is not None
        items: list[RawItem] = []
        layout: LabelFileLayout | None = None
        for n, line in label_file_lines(path, shown):
            if layout is None:
                if not line.strip():
                    continue
                first = line.decode("utf-8", "replace")
                try:
                    layout = label_file_layout(first, self.spec, shown, split_elsewhere)
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

    def _row(self, n: int, line: bytes, layout: LabelFileLayout, shown: str,
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
            fields = split_line(text, layout.delimiter)
        except csv.Error as e:
            return self._fail(line_id, f"malformed line: {e} ({where})")
        if len(fields) < layout.min_fields:
            return self._fail(line_id, f"too few columns: {len(fields)}, expected at least "
                                       f"{layout.min_fields} ({where})")
        rel, why = _relative_image_path(fields[layout.path], self.absolute_roots)
        if rel is None:
            return self._fail(line_id, f"{why} ({where})")
        rel = self.meanings.with_suffix(rel)
        if rel in self._seen:
            return self._fail(rel, f"listed twice: first at {self._seen[rel]} ({where})")
        self._seen[rel] = where
        return self._item(rel, fields, layout, where, file_split)

    def _item(self, rel: str, fields: list[str], layout: LabelFileLayout, where: str,
              file_split: str | None) -> RawItem | None:
        """The item for image ``rel`` from the row's ``fields``, or None after recording why not."""
        if not is_image_file(rel):
            ext = os.path.splitext(rel)[1]
            what = f"extension {ext}" if ext else "no extension"
            return self._fail(rel, f"not an image file: {what} ({where})")
        label, why = self.meanings.label(fields[layout.label]) if layout.label is not None else (None, None)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        split, why = self.meanings.split(rel, fields, layout, file_split)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        subject, why = self.meanings.subject(rel, fields, layout)
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        box = None
        if layout.box is not None:
            box, why = _parse_box([fields[i] for i in layout.box], layout.box_format)
            if why is not None:
                return self._fail(rel, f"{why} ({where})")
        values, why = _parse_values([(name, fields[i]) for name, i in layout.values])
        if why is not None:
            return self._fail(rel, f"{why} ({where})")
        path, why = self.folder.file(rel)  # last: the only check that touches the disk
        if path is None:
            return self._fail(rel, f"{why} ({where})")
        return RawItem(rel, path, label, split, subject, box=box, annotations=values)

    def _fail(self, source: str, reason: str) -> None:
        """Record a failure; returns None for the caller to return."""
        self.failures.append(Failure(source, reason))
        return None


class _RowMeanings:
    """What a label-file row's fields mean under one dataset description: its label (each
    spelling's meaning cached), split and subject, and the image name suffix."""

    def __init__(self, spec: DatasetSpec | None) -> None:
        self.spec = spec
        self._labels: dict[str, tuple[str | None, str | None]] = {}
        self._split_names = {k.lower(): v for k, v in FER2013_SPLIT_NAMES.items()}
        self._split_names.update(split_folder_names(spec))
        self._non_expressions = {label_key(k): v
                                 for k, v in (spec.non_expression_labels if spec else {}).items()}
        by_prefix = spec is not None and spec.split_from_filename_prefix
        self.prefix_re = prefix_pattern(spec.split_names) if by_prefix else None

    def with_suffix(self, rel: str) -> str:
        """``rel`` with the description's `image_name_suffix` put before the extension."""
        suffix = self.spec.image_name_suffix if self.spec is not None else ""
        if not suffix:
            return rel
        stem, ext = os.path.splitext(rel)
        return stem + suffix + ext

    def label(self, text: str) -> tuple[str | None, str | None]:
        """(canonical label, None) or (None, reason) for a label field; cached per spelling."""
        if text not in self._labels:
            meaning = self._non_expressions.get(label_key(text))
            if not text:
                self._labels[text] = (None, "missing label")
            elif meaning is not None:
                self._labels[text] = (None, f"not an expression: label {text!r} means {meaning!r}")
            else:
                self._labels[text] = label_or_reason(text, self.spec)
        return self._labels[text]

    def split(self, rel: str, fields: list[str], layout: LabelFileLayout,
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
        if self.prefix_re is not None:
            m = self.prefix_re.match(rel.rsplit("/", 1)[-1])
            if m is None:
                return None, ("file name has no split prefix (expected one of "
                              f"{', '.join(k + '_' for k in self.spec.split_names)})")
            return self.spec.split_names[m.group(1)], None
        return file_split, None

    def subject(self, rel: str, fields: list[str], layout: LabelFileLayout
                 ) -> tuple[str | None, str | None]:
        """(subject or None, None) from the subject column or the subject pattern, or (None, reason)."""
        if layout.subject is not None:
            return fields[layout.subject] or None, None
        return subject_from_name(rel.rsplit("/", 1)[-1], self.spec)


class _ImageFolder:
    """The image folder a label file's paths are relative to; remembers the real path of each
    sub-folder, so that a link out of the image folder is refused once per folder, not per row."""

    def __init__(self, image_root: str, root_shown: str) -> None:
        self.root = image_root
        self.root_shown = root_shown
        self._inside = image_root.rstrip(os.sep) + os.sep
        self._real_dirs: dict[str, str | None] = {"": image_root}  # sub-folder -> real path (None: outside)

    def file(self, rel: str) -> tuple[str | None, str | None]:
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


def label_file_lines(path: str, shown: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end and byte-order mark) of a (possibly gzipped)
    label file; a file that cannot be read raises `InputError` naming ``shown``."""
    try:
        with open_binary(path) as fh:
            for n, line in enumerate(fh, 1):
                if n == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")
                yield n, line.rstrip(b"\r\n")
    except READ_ERRORS as e:
        raise InputError(f"{shown}: {read_problem(e)}") from None
