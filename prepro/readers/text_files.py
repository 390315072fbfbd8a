"""Reading the text files of a source (the FER2013 CSV, label files), gzipped or not: what reading
one can raise, and those errors in words.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO

from prepro.errors import InputError


# What reading a (possibly gzipped) text file can raise: a missing or unreadable file, a file that is
# no gzip (gzip.BadGzipFile is an OSError), a truncated stream (EOFError), corrupt compressed data
# (zlib.error), bytes that are not UTF-8.
READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


def open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading bytes, through gzip when its name ends with ``.gz``."""
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def read_problem(e: BaseException) -> str:
    """What one of `READ_ERRORS` says about the file, in words."""
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


def first_line(path: Path) -> str:
    """The first line of a (possibly gzipped) text file, for format detection: decoded with
    replacement characters, without a byte-order mark; `InputError` if the file cannot be read."""
    try:
        with open_binary(str(path)) as fh:
            line = fh.readline(1 << 20)
    except READ_ERRORS as e:
        raise InputError(f"{path}: {read_problem(e)}") from None
    return line.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").rstrip("\r\n")
