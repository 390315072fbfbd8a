"""What the names in a source say: split folder names, FER2013's split prefixes, labels and
subjects spelt in file and folder names (shared by every layout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prepro.labels import UnknownLabelError, canonical_label
from prepro.patterns import search_capped
from prepro.specs import DatasetSpec


# Split folder names (compared lower-case) -> split.
SPLIT_FOLDER_NAMES: Mapping[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


# FER2013's file-name prefixes (Kaggle folders) and Usage values (CSV).
FER2013_SPLIT_NAMES: Mapping[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def subject_from_name(name: str, spec: DatasetSpec | None) -> tuple[str | None, str | None]:
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


def label_or_reason(name: str, spec: DatasetSpec | None) -> tuple[str | None, str | None]:
    """(canonical label, None) for a spelling, or (None, the reason it is unknown)."""
    try:
        return canonical_label(name, spec.labels if spec else None), None
    except UnknownLabelError as e:
        return None, str(e)


def split_folder_names(spec: DatasetSpec | None) -> dict[str, str]:
    """Split names (lower case) -> split: the usual folder names plus the spec's `split_names`."""
    names = dict(SPLIT_FOLDER_NAMES)
    if spec is not None:
        names.update({k.lower(): v for k, v in spec.split_names.items()})
    return names


def prefix_pattern(names: Mapping[str, str]) -> re.Pattern[str]:
    """A regex matching ``<name>_`` at the start of a file name, group 1 the name (longest first)."""
    alts = "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))
    return re.compile(rf"^({alts})_")
