"""The FER2013 CSV (emotion,pixels[,Usage], gzipped or not): listing its rows by byte offset
(`list_csv`), reading a row's pixel string when the pipeline hands the row to a worker
(`CsvRowReader`), and parsing that string into an image in the worker (`parse_pixels`).
"""

from __future__ import annotations

import os
import re
from typing import IO

import numpy as np

from prepro.errors import InputError, SampleError
from prepro.labels import CANONICAL_LABELS
from prepro.readers.names import FER2013_SPLIT_NAMES, label_or_reason
from prepro.readers.records import Failure, RawItem
from prepro.readers.text_files import READ_ERRORS, open_binary, read_problem
from prepro.specs import DatasetSpec


class BadPixelsError(SampleError):
    """A FER2013 row whose pixels cannot be read, or are not ``size*size`` integers in 0..255.

    Its own class because the pipeline catches it to list the row as a failure and go on.
    """


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


def list_csv(path: str, spec: DatasetSpec | None, failures: list[Failure]) -> list[RawItem]:
    """The rows of the FER2013 CSV at ``path``; a file that cannot be read raises `InputError`."""
    try:
        return _csv_rows(path, spec, failures)
    except READ_ERRORS as e:
        raise InputError(f"{path}: {read_problem(e)}") from None


def _csv_rows(path: str, spec: DatasetSpec | None, failures: list[Failure]) -> list[RawItem]:
    """One streaming pass over the CSV rows: items, and a `Failure` per unusable row."""
    items: list[RawItem] = []
    with open_binary(path) as fh:
        header = fh.readline()
        if not header.strip():
            raise InputError(f"{path}: empty file; expected a header emotion,pixels[,Usage] and rows")
        rows = _CsvRows(path, spec, header)
        offset = len(header)
        # One streaming pass; only the offset of each row is kept, never its pixel string.
        for n, line in enumerate(fh):
            row_offset, offset = offset, offset + len(line)
            got = rows.item(n, line, row_offset)
            (items if isinstance(got, RawItem) else failures).append(got)
    return items


class _CsvRows:
    """What the rows of one FER2013 CSV mean: its columns (from ``header``), its emotion codes and
    Usage names (from the description, else FER2013's)."""

    def __init__(self, path: str, spec: DatasetSpec | None, header: bytes) -> None:
        self.path, self.spec, self.header = path, spec, header
        self.csv_name = os.path.basename(path)
        codes = {k.strip(): v for k, v in (spec.labels if spec else {}).items()}
        self.usage_map = {k.lower(): v for k, v in (spec.split_names if spec else FER2013_SPLIT_NAMES).items()}
        self.allowed_usage = ", ".join(spec.split_names if spec and spec.split_names else FER2013_SPLIT_NAMES)
        self.allowed_codes = ", ".join(f"{k}={v}" for k, v in codes.items()) or ", ".join(CANONICAL_LABELS)
        self.label_cache: dict[str, str | None] = {}
        cols = _csv_columns(header, path)
        self.i_emo, self.i_pix, self.i_use = cols["emotion"], cols["pixels"], cols.get("usage")
        self.n_fields = max(cols.values()) + 1

    def item(self, n: int, line: bytes, row_offset: int) -> RawItem | Failure:
        """The item of data row ``n`` (0-based) starting at byte ``row_offset``, or its failure."""
        sid = f"{self.csv_name}:row={n}"
        where = f"line {n + 2}"
        try:
            fields = _split_fields(line)
        except UnicodeDecodeError:
            return Failure(sid, f"{where}: not UTF-8 text")
        if fields == [""]:
            return Failure(sid, f"{where}: empty line")
        if len(fields) != self.n_fields:
            return Failure(sid, f"{where}: {len(fields)} fields, expected {self.n_fields} "
                                f"({self.header.decode('utf-8', 'replace').strip()})")
        emo, pix = fields[self.i_emo], fields[self.i_pix]
        if not emo or not pix:
            return Failure(sid, f"{where}: missing field {'emotion' if not emo else 'pixels'}")
        if emo not in self.label_cache:
            self.label_cache[emo] = label_or_reason(emo, self.spec)[0]
        label = self.label_cache[emo]
        if label is None:
            return Failure(sid, f"{where}: unknown emotion {emo!r}; allowed: {self.allowed_codes}")
        split = None
        if self.i_use is not None:
            usage = fields[self.i_use]
            if not usage:
                return Failure(sid, f"{where}: missing field Usage")
            split = self.usage_map.get(usage.lower())
            if split is None:
                return Failure(sid, f"{where}: unknown Usage {usage!r}; allowed: {self.allowed_usage}")
        return RawItem(sid, self.path, label, split, None, row_offset)


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
        except READ_ERRORS as e:
            self.close()
            message = f"{path}: cannot read the row at byte offset {offset}: {read_problem(e)}"
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
            self._fh = open_binary(path)
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
