"""Per-sample values some sources give beyond the label: FER+'s vote counts, AffectNet's valence
and arousal. A shard holds such an array only when its source gave it (shards of other sources,
and older shards, have none), so every reader asks `held_fields` before it reads one.

A leaf (numpy and the label names only): the readers attach these values to their items, the
shard writer stores them, and the readers of shards check them, all through this one table.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from prepro.labels import CANONICAL_LABELS

# FER+'s ten vote columns, stored in the order of the shard labels (so that column k of `votes`
# counts the votes for label index k) and then FER+'s own two: "unknown" and NF ("not a face").
VOTE_COLUMNS: tuple[str, ...] = (*CANONICAL_LABELS, "unknown", "not_face")

# name -> (dtype, per-sample shape, what a valid value is, in words)
OPTIONAL_FIELDS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "votes": ("float32", (len(VOTE_COLUMNS),), "a finite count of at least 0"),
    "valence": ("float32", (), "a number in -1..1 or NaN (not given)"),
    "arousal": ("float32", (), "a number in -1..1 or NaN (not given)"),
}


def drop_single_votes(votes: np.ndarray) -> np.ndarray:
    """Vote counts with every count of one (or less) set to 0: FER+'s reference code takes a lone
    tagger's vote for an outlier, both for the majority label and for the vote distribution."""
    votes = np.asarray(votes, dtype=np.float64)
    return np.where(votes > 1, votes, 0.0)


def valid_values(name: str, a: np.ndarray) -> np.ndarray:
    """A boolean per value of the optional array ``name``: can a reader use it?"""
    if name == "votes":
        return np.isfinite(a) & (a >= 0)
    return np.isnan(a) | ((a >= -1) & (a <= 1))


def arrays_for(sources: list[str], table: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The optional arrays of a shard whose samples have the source ids ``sources``: one per field
    the ``table`` (source id -> {field: value}) gives for any of them. A sample the table gives no
    value of a field gets NaN (its source did not give it; never 0, which is a value)."""
    names = [n for n in OPTIONAL_FIELDS if any(n in table.get(s, {}) for s in sources)]
    out = {}
    for name in names:
        dtype, shape, _ = OPTIONAL_FIELDS[name]
        arr = np.full((len(sources), *shape), np.nan, dtype=dtype)
        for i, s in enumerate(sources):
            value = table.get(s, {}).get(name)
            if value is not None:
                arr[i] = value
        out[name] = arr
    return out


def summary_of(parts: Mapping[str, list[np.ndarray]]) -> dict[str, dict[str, Any]]:
    """What `faceblocks inspect` says of the optional arrays read (name -> one array per shard):
    per name, the samples that have a value, and the least, mean and largest value (votes: per
    sample, the total)."""
    out: dict[str, dict[str, Any]] = {}
    for name, arrays in parts.items():
        a = np.concatenate(arrays).astype(np.float64)
        a = a.sum(axis=1) if a.ndim > 1 else a
        given = a[~np.isnan(a)]
        out[name] = {"given": int(given.size), "missing": int(a.size - given.size)}
        if given.size:
            out[name].update(min=float(given.min()), mean=float(given.mean()), max=float(given.max()))
    return out


def held_fields(files: Iterable[Any]) -> tuple[str, ...]:
    """The optional fields every one of the open shard ``files`` holds (none for no file)."""
    files = list(files)
    return tuple(n for n in OPTIONAL_FIELDS if files and all(n in f for f in files))
