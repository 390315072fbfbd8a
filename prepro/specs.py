"""Dataset descriptions: what is known about each dataset lives in ``datasets/<name>.toml``.

A new dataset needs a TOML file, not code (see datasets/README.md for the schema). Only the keys
of `DatasetSpec` are allowed; an unknown key is an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prepro.labels import UnknownLabelError, canonical_label

ENV_VAR = "FACEBLOCKS_DATASETS"
SPLITS = ("train", "val", "test")


class SpecError(ValueError):
    """A dataset description that cannot be used (unknown key, wrong type, bad value)."""


class UnknownDatasetError(SpecError):
    """A dataset name with no ``<name>.toml`` in the datasets folder."""


class DatasetsDirNotFoundError(FileNotFoundError):
    """No datasets folder in any of the places faceblocks looks."""


@dataclass(frozen=True)
class DatasetSpec:
    # short name used on the command line (`--dataset ckplus`); defaults to the file's stem
    name: str
    # reader format: folder | fer2013-csv | ferg | jaffe | flat (see prepro.readers.FORMATS)
    format: str
    # human-readable title for logs and manifests
    title: str = ""
    # faces already cropped and roughly aligned (FER2013, CK+48, FERG): no face detection needed
    pre_cropped: bool = False
    # informational image size [height, width] when every image has the same size, else None
    image_size: tuple[int, int] | None = None
    # dataset spelling -> canonical label ("0" -> "angry"); consulted before the global aliases
    labels: dict[str, str] = field(default_factory=dict)
    # source split name -> train/val/test ("PublicTest" -> "val")
    split_names: dict[str, str] = field(default_factory=dict)
    # the split comes from the file-name prefix <split name>_ (FER2013 Kaggle folders)
    split_from_filename_prefix: bool = False
    # regex applied to the file name; group 1 is the subject (identity) for subject-disjoint splits
    subject_pattern: str | None = None
    # expected item count per split (informational: a different count is warned about)
    expected_counts: dict[str, int] = field(default_factory=dict)
    # where the dataset is obtained
    source_url: str = ""
    # licence or terms of use, in one line
    license: str = ""
    # anything else worth knowing
    notes: str = ""


def _allowed_keys() -> list[str]:
    return [f.name for f in fields(DatasetSpec)]


def _check_str_map(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise SpecError(f"{key!r} must be a table of strings (\"spelling\" = \"value\"), got {value!r}")
    return dict(value)


def _spec_from_dict(data: dict[str, Any], origin: str, default_name: str) -> DatasetSpec:
    """Validate the parsed TOML ``data`` (from ``origin``) and build a `DatasetSpec`."""
    from prepro.readers import FORMATS  # here, not at the top: readers imports this module

    allowed = _allowed_keys()
    for key in data:
        if key not in allowed:
            raise SpecError(f"{origin}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    kw: dict[str, Any] = {"name": data.get("name", default_name)}
    for key in ("name", "title", "source_url", "license", "notes"):
        if key in data:
            if not isinstance(data[key], str):
                raise SpecError(f"{origin}: {key!r} must be a string, got {type(data[key]).__name__}")
            kw[key] = data[key]
    if not kw["name"]:
        raise SpecError(f"{origin}: 'name' must not be empty")

    if "format" not in data:
        raise SpecError(f"{origin}: missing key 'format'; allowed formats: {', '.join(FORMATS[1:])}")
    if data["format"] not in FORMATS[1:]:  # "auto" describes nothing
        raise SpecError(f"{origin}: 'format' is {data['format']!r}; allowed formats: "
                        f"{', '.join(FORMATS[1:])}")
    kw["format"] = data["format"]

    for key in ("pre_cropped", "split_from_filename_prefix"):
        if key in data:
            if not isinstance(data[key], bool):
                raise SpecError(f"{origin}: {key!r} must be true or false, got {data[key]!r}")
            kw[key] = data[key]

    if "image_size" in data:
        size = data["image_size"]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise SpecError(f"{origin}: 'image_size' must be [height, width] (positive integers), "
                            f"got {size!r}")
        kw["image_size"] = (size[0], size[1])

    if "labels" in data:
        labels = _check_str_map("labels", data["labels"])
        for spelling, target in labels.items():
            try:
                labels[spelling] = canonical_label(target)
            except UnknownLabelError as e:
                raise SpecError(f"{origin}: labels.{spelling}: {e}") from None
        kw["labels"] = labels

    if "split_names" in data:
        split_names = _check_str_map("split_names", data["split_names"])
        for src, dst in split_names.items():
            if dst not in SPLITS:
                raise SpecError(f"{origin}: split_names.{src} is {dst!r}; allowed: {', '.join(SPLITS)}")
        kw["split_names"] = split_names

    if data.get("split_from_filename_prefix") and not kw.get("split_names"):
        raise SpecError(f"{origin}: 'split_from_filename_prefix' needs a 'split_names' table "
                        "(prefix -> train/val/test)")

    if "subject_pattern" in data:
        pat = data["subject_pattern"]
        if not isinstance(pat, str):
            raise SpecError(f"{origin}: 'subject_pattern' must be a string, got {type(pat).__name__}")
        try:
            groups = re.compile(pat).groups
        except re.error as e:
            raise SpecError(f"{origin}: 'subject_pattern' {pat!r} is not a valid regex: {e}") from None
        if groups < 1:
            raise SpecError(f"{origin}: 'subject_pattern' {pat!r} needs a group (...) for the subject")
        kw["subject_pattern"] = pat

    if "expected_counts" in data:
        counts = data["expected_counts"]
        if not isinstance(counts, dict):
            raise SpecError(f"{origin}: 'expected_counts' must be a table split = count, got {counts!r}")
        for split, n in counts.items():
            if split not in SPLITS:
                raise SpecError(f"{origin}: expected_counts.{split}: unknown split; allowed: "
                                f"{', '.join(SPLITS)}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise SpecError(f"{origin}: expected_counts.{split} must be a count >= 0, got {n!r}")
        kw["expected_counts"] = dict(counts)

    return DatasetSpec(**kw)


def datasets_dir() -> Path:
    """The folder holding the ``*.toml`` dataset descriptions.

    Looked for, in order: ``$FACEBLOCKS_DATASETS``; ``datasets/`` beside the ``prepro`` package
    (source checkout, editable install); ``<sys.prefix>/share/faceblocks/datasets`` (wheel install).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        # an explicit choice that does not exist is an error, not a reason to look elsewhere
        if not Path(env).is_dir():
            raise DatasetsDirNotFoundError(f"${ENV_VAR} is {env!r}, which is not a folder")
        return Path(env)
    candidates = [Path(__file__).resolve().parent.parent / "datasets",
                  Path(sys.prefix) / "share" / "faceblocks" / "datasets"]
    for c in candidates:
        if c.is_dir():
            return c
    raise DatasetsDirNotFoundError(
        "no datasets folder found; looked in " + ", ".join(str(c) for c in candidates)
        + f" (set ${ENV_VAR} to a folder of dataset .toml files)")


def list_specs() -> list[str]:
    """Names of the dataset descriptions available in `datasets_dir`, sorted."""
    return sorted(p.stem for p in datasets_dir().glob("*.toml") if not p.name.startswith("."))


def load_spec(name_or_path: str) -> DatasetSpec:
    """Load a dataset description by name (``"ckplus"``) or from a ``.toml`` file path.

    Raises `UnknownDatasetError` (listing the available names) for an unknown name and
    `SpecError` for a file with an unknown key, a wrong type or a bad value.
    """
    text = str(name_or_path)
    is_path = text.lower().endswith(".toml") or os.sep in text or "/" in text
    if is_path:
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"dataset description file {text!r} does not exist")
    else:
        path = datasets_dir() / f"{text.lower()}.toml"
        if not path.is_file():
            raise UnknownDatasetError(f"unknown dataset {text!r}; available: {', '.join(list_specs())} "
                                      "(or give the path of a .toml file)")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return _spec_from_dict(data, str(path), path.stem)
