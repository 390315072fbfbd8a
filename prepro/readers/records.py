"""The records a listing is made of: an item to process, an input that cannot be used, the
listing itself; and the error of a source that does not exist.

A leaf: the writer, the workers and the pipeline read these records without the listing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prepro.errors import InputError
from prepro.specs import DatasetSpec


class SourceNotFoundError(InputError, FileNotFoundError):
    """A source path that does not exist (also a FileNotFoundError, for callers that catch that)."""


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
    # values the source gives beyond the label, kept per sample in the shards
    # (`prepro.sample_values.OPTIONAL_FIELDS`): (("votes", (10 counts)),) for FER+,
    # (("valence", v), ("arousal", a)) for AffectNet; empty for every other source
    annotations: tuple[tuple[str, Any], ...] = ()


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
