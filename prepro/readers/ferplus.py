"""FER+ (microsoft/FERPlus): the FER2013 CSV's images, labelled by the ten taggers' votes of
``fer2013new.csv``, which holds one row per row of ``fer2013.csv``, in the same order
(``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``).

The label is FER+'s majority label (`majority_label`, the rule of the reference code's "majority"
mode); a row whose majority is unknown or "not a face" is a listed failure that says so. The split
is FER+'s Usage column; every item keeps its ten counts (``votes``, in `VOTE_COLUMNS` order).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Sequence

from prepro.errors import InputError
from prepro.readers.fer2013_csv import list_csv
from prepro.readers.records import Failure, RawItem
from prepro.readers.text_files import READ_ERRORS, open_binary, read_problem
from prepro.sample_values import VOTE_COLUMNS, drop_single_votes
from prepro.specs import DatasetSpec

# fer2013new.csv's columns, lower case, in its order
VOTE_FILE_HEADER = ("usage", "image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                    "fear", "contempt", "unknown", "nf")
# FER+'s name of each of `VOTE_COLUMNS`, so that the counts are stored in the shard labels' order
_FERPLUS_NAME = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "sad": "sadness",
                 "surprise": "surprise", "neutral": "neutral", "contempt": "contempt", "unknown": "unknown",
                 "not_face": "nf"}
_VOTE_ORDER = tuple(VOTE_FILE_HEADER.index(_FERPLUS_NAME[c]) for c in VOTE_COLUMNS)
DEFAULT_VOTE_FILES = ("fer2013new.csv", "fer2013new.csv.gz")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}", re.ASCII)


def majority_label(votes: Sequence[float]) -> str:
    """FER+'s majority label of one face from its counts in `VOTE_COLUMNS` order: a label name,
    "unknown" or "not_face".

    Single votes are dropped (a lone tagger is taken for an outlier); the column holding more than
    half of the remaining votes wins; when none does (a tie, a spread vote, nothing left) the face
    is "unknown". Unknown and "not_face" win like any other column.
    """
    kept = drop_single_votes(votes)
    best = kept.max()
    if best > kept.sum() / 2:
        return VOTE_COLUMNS[int(kept.argmax())]
    return "unknown"


def _failure_reason(winner: str) -> str:
    if winner == "not_face":
        return "not a face (FER+: the taggers' majority voted NF)"
    return "FER+ label unknown (no expression has more than half of the votes left after dropping single ones)"


def vote_file_of(csv_path: str, votes_file: str | None) -> str:
    """The vote file: ``votes_file`` if given, else ``fer2013new.csv`` (or ``.csv.gz``) beside the CSV."""
    if votes_file is not None:
        if not os.path.isfile(votes_file):
            raise InputError(f"the FER+ vote file {votes_file} does not exist or is not a file")
        return votes_file
    folder = os.path.dirname(csv_path)
    for name in DEFAULT_VOTE_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise InputError(f"FER+ needs its vote file {DEFAULT_VOTE_FILES[0]} beside {csv_path} (microsoft/FERPlus); "
                     "or name it with --votes-file")


def read_vote_rows(path: str) -> list[tuple[str, tuple[float, ...]] | str]:
    """Per data row of the vote file: (its Usage, its counts in `VOTE_COLUMNS` order), or the
    reason the row cannot be used. A file that cannot be read or has another header: InputError."""
    try:
        with open_binary(path) as fh:
            header = fh.readline().removeprefix(b"\xef\xbb\xbf").decode("utf-8")
            names = tuple(n.strip().strip('"').strip().lower() for n in header.split(","))
            if names != VOTE_FILE_HEADER:
                raise InputError(f"{path}: header {header.strip()[:120]!r} is not FER+'s "
                                 f"({','.join(VOTE_FILE_HEADER)})")
            return [_vote_row(line, n) for n, line in enumerate(fh, 2)]
    except READ_ERRORS as e:
        raise InputError(f"{path}: {read_problem(e)}") from None


def _vote_row(line: bytes, n: int) -> tuple[str, tuple[float, ...]] | str:
    where = f"vote file line {n}"
    try:
        fields = [f.strip() for f in line.decode("utf-8").rstrip("\r\n").split(",")]
    except UnicodeDecodeError:
        return f"{where}: not UTF-8 text"
    if len(fields) != len(VOTE_FILE_HEADER):
        return f"{where}: {len(fields)} fields, expected {len(VOTE_FILE_HEADER)}"
    bad = next((f for f in fields[2:] if _WHOLE_NUMBER.fullmatch(f) is None), None)
    if bad is not None:
        return f"{where}: vote count {bad[:20]!r} is not a whole number of at least 0"
    return fields[0], tuple(float(fields[i]) for i in _VOTE_ORDER)


def list_ferplus(path: str, spec: DatasetSpec, failures: list[Failure], votes_file: str | None) -> list[RawItem]:
    """The rows of the FER2013 CSV at ``path`` labelled by FER+'s votes (see the module doc)."""
    vote_path = vote_file_of(path, votes_file)
    votes = read_vote_rows(vote_path)
    csv_failures: list[Failure] = []
    items = list_csv(path, spec, csv_failures)
    failures += csv_failures
    if len(items) + len(csv_failures) != len(votes):
        raise InputError(f"{vote_path} has {len(votes)} rows and {path} {len(items) + len(csv_failures)}: FER+'s "
                         "vote file must hold one row per row of fer2013.csv, in the same order")
    usage_map = {k.lower(): v for k, v in spec.split_names.items()}
    out = []
    for item in items:
        got = _labelled(item, votes[int(item.source_id.rsplit("=", 1)[1])], usage_map)
        (out if isinstance(got, RawItem) else failures).append(got)
    return out


def _labelled(item: RawItem, row: tuple[str, tuple[float, ...]] | str, usage_map: dict[str, str]
              ) -> RawItem | Failure:
    """``item`` with FER+'s label, split and votes, or its failure."""
    if isinstance(row, str):
        return Failure(item.source_id, row)
    usage, counts = row
    split = usage_map.get(usage.lower())
    if split is None:
        return Failure(item.source_id, f"FER+: unknown Usage {usage[:40]!r}; allowed: {', '.join(usage_map)}")
    if item.split is not None and item.split != split:
        return Failure(item.source_id, f"FER+: Usage {usage!r} in the vote file, but split {item.split} in the CSV "
                                       "(are the two files row for row?)")
    winner = majority_label(counts)
    if winner in ("unknown", "not_face"):
        return Failure(item.source_id, _failure_reason(winner))
    return replace(item, label=winner, split=split, annotations=(("votes", counts),))
