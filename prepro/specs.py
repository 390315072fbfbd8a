"""Dataset descriptions: what is known about each dataset lives in ``datasets/<name>.toml``.

A new dataset needs a TOML file, not code (see datasets/README.md for the schema). Only the keys
of `DatasetSpec` are allowed; an unknown key is an error, so a typo never goes unnoticed.

The reader format names (`FORMATS`) and the split names (`SPLITS`) are defined here, the one
place that both this module and `prepro.readers` import them from.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prepro.errors import InputError
from prepro.labels import UnknownLabelError, canonical_label, label_key
from prepro.patterns import pattern_cost_problem

ENV_VAR = "FACEBLOCKS_DATASETS"

# The splits a sample can belong to; their order is the split index stored in shards.
SPLITS = ("train", "val", "test")

# Reader formats (see prepro.readers); "auto" detects one of the others.
# "ferplus" is the FER2013 CSV labelled by the FER+ vote file beside it (never detected: it needs --dataset
# ferplus or --format ferplus).
FORMATS = ("auto", "folder", "fer2013-csv", "ferg", "jaffe", "flat", "labels", "ferplus")

# Column roles a label file's `columns` table may name.
# valence and arousal (AffectNet) are kept per sample in the shards (`prepro.sample_values`), NaN
# where a row's cell is empty
VALUE_COLUMNS = ("valence", "arousal")
LABEL_FILE_COLUMNS = ("path", "label", "split", "subject", *VALUE_COLUMNS)

# Field separators of a label file: "auto" detects one, "whitespace" is any run of spaces and tabs.
DELIMITERS = ("auto", ",", ";", "\t", "|", "whitespace")

# How `box_columns` give the face box: left, top, width, height, or left, top, right, bottom.
BOX_FORMATS = ("xywh", "ltrb")

# Keys that only the `labels` format reads; any other format refuses them.
_LABEL_FILE_KEYS = ("label_files", "image_root", "image_name_suffix", "delimiter", "header", "columns",
                    "box_columns", "box_format", "non_expression_labels", "split_from_label_file")


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about one dataset; read from ``datasets/<name>.toml`` by `load_spec`."""

    # short name used on the command line (`--dataset ckplus`); defaults to the file's stem
    name: str
    # reader format: folder | fer2013-csv | ferg | jaffe | flat | labels (see `FORMATS`)
    format: str
    # human-readable title for logs and manifests
    title: str = ""
    # faces already cropped and roughly aligned (FER2013, CK+48, FERG): no face detection needed
    pre_cropped: bool = False
    # informational image size [height, width] when every image has the same size, else None
    image_size: tuple[int, int] | None = None
    # dataset spelling -> canonical label ("0" -> "angry"); consulted before the global aliases
    labels: dict[str, str] = field(default_factory=dict)
    # source split name -> train/val/test ("PublicTest" -> "val"); for `labels` also the split
    # column's values or the label files' names (without extension)
    split_names: dict[str, str] = field(default_factory=dict)
    # the split comes from the file-name prefix <split name>_ (FER2013 Kaggle folders, RAF-DB)
    split_from_filename_prefix: bool = False
    # regex applied to the file name; group 1 is the subject (identity) for subject-disjoint splits
    subject_pattern: str | None = None
    # expected item count per split (informational: a different count is warned about)
    expected_counts: dict[str, int] = field(default_factory=dict)
    # labels: the label files, POSIX paths relative to SOURCE (a folder); empty when SOURCE is the
    # label file itself
    label_files: tuple[str, ...] = ()
    # labels: folder the listed image paths are relative to, relative to SOURCE (or to the label
    # file's folder when SOURCE is the file); "" is that folder itself
    image_root: str = ""
    # labels: text put before each listed image name's extension ("_aligned": a.jpg -> a_aligned.jpg)
    image_name_suffix: str = ""
    # labels: field separator, one of `DELIMITERS`; "auto" takes tab, else comma, else semicolon,
    # else whitespace, from the first line
    delimiter: str = "auto"
    # labels: whether the first line names the columns; None detects it (a known column name and
    # no image file name in the line)
    header: bool | None = None
    # labels: column role (`LABEL_FILE_COLUMNS`) -> header name or 0-based index; empty recognises
    # the header's names (or takes column 0 = path, 1 = label without a header)
    columns: dict[str, str | int] = field(default_factory=dict)
    # labels: the four face-box columns (header names or 0-based indexes), in `box_format` order
    box_columns: tuple[str | int, ...] = ()
    # labels: "xywh" or "ltrb" (right/bottom exclusive), how `box_columns` give the box
    box_format: str = ""
    # labels: spelling -> meaning of labels that are no expression (AffectNet "8" -> "none"); their
    # rows are listed failures that say so
    non_expression_labels: dict[str, str] = field(default_factory=dict)
    # labels: the split is the label file's name without extension, mapped through `split_names`
    split_from_label_file: bool = False
    # where the dataset is obtained
    source_url: str = ""
    # licence or terms of use, in one line
    license: str = ""
    # anything else worth knowing
    notes: str = ""


def _allowed_keys() -> list[str]:
    """The keys a dataset description may hold: the fields of `DatasetSpec`."""
    return [f.name for f in fields(DatasetSpec)]


def _check_str_map(origin: str, key: str, value: Any) -> dict[str, str]:
    """``value`` as a table of strings; raises `InputError` naming ``key`` otherwise."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise InputError(f"{origin}: {key!r} must be a table of strings (\"spelling\" = \"value\"), "
                         f"got {value!r}")
    return dict(value)


def _is_count(value: Any) -> bool:
    """True for an int >= 0 that is not a bool (TOML true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_relative_path(origin: str, key: str, value: Any, allow_empty: bool) -> str:
    """A POSIX path inside SOURCE: relative, no ``..``; raises `InputError` naming ``key``."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise InputError(f"{origin}: {key!r} must be a {'' if allow_empty else 'non-empty '}string "
                         f"(a path relative to SOURCE), got {value!r}")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value) or ".." in parts or "\0" in value:
        raise InputError(f"{origin}: {key!r} is {value!r}; it must be a path inside SOURCE "
                         "(relative, without '..')")
    return "/".join(p for p in parts if p not in ("", "."))


def _check_column(origin: str, key: str, value: Any) -> str | int:
    """A column reference: a non-empty header name or a 0-based index."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if _is_count(value):
        return value
    raise InputError(f"{origin}: {key} must be a header name (string) or a 0-based column index, "
                     f"got {value!r}")


def _spec_from_dict(data: dict[str, Any], origin: str, default_name: str) -> DatasetSpec:
    """Validate the parsed TOML ``data`` (from ``origin``) and build a `DatasetSpec`.

    Every problem raises `InputError` with a one-line message that names the key.
    """
    allowed = _allowed_keys()
    for key in data:
        if key not in allowed:
            raise InputError(f"{origin}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    kw: dict[str, Any] = {"name": data.get("name", default_name)}
    for key in ("name", "title", "source_url", "license", "notes"):
        if key in data:
            if not isinstance(data[key], str):
                raise InputError(f"{origin}: {key!r} must be a string, got {type(data[key]).__name__}")
            kw[key] = data[key]
    if not kw["name"]:
        raise InputError(f"{origin}: 'name' must not be empty")

    if "format" not in data:
        raise InputError(f"{origin}: missing key 'format'; allowed formats: {', '.join(FORMATS[1:])}")
    if data["format"] not in FORMATS[1:]:  # "auto" describes nothing
        raise InputError(f"{origin}: 'format' is {data['format']!r}; allowed formats: "
                         f"{', '.join(FORMATS[1:])}")
    kw["format"] = data["format"]

    for key in ("pre_cropped", "split_from_filename_prefix", "split_from_label_file", "header"):
        if key in data:
            if not isinstance(data[key], bool):
                raise InputError(f"{origin}: {key!r} must be true or false, got {data[key]!r}")
            kw[key] = data[key]

    if "image_size" in data:
        size = data["image_size"]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise InputError(f"{origin}: 'image_size' must be [height, width] (positive integers), "
                             f"got {size!r}")
        kw["image_size"] = (size[0], size[1])

    kw.update(_labels_and_splits(data, origin))
    kw.update(_subject_and_counts(data, origin))
    kw.update(_label_file_keys(data, origin, kw["format"]))
    _check_split_sources(kw, origin)
    return DatasetSpec(**kw)


def _labels_and_splits(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """The validated `labels`, `non_expression_labels` and `split_names` tables of ``data``."""
    kw: dict[str, Any] = {}
    if "labels" in data:
        labels = _check_str_map(origin, "labels", data["labels"])
        for spelling, target in labels.items():
            try:
                labels[spelling] = canonical_label(target)
            except UnknownLabelError as e:
                raise InputError(f"{origin}: labels.{spelling}: {e}") from None
        kw["labels"] = labels
    if "non_expression_labels" in data:
        others = _check_str_map(origin, "non_expression_labels", data["non_expression_labels"])
        expressions = {label_key(k) for k in kw.get("labels", {})}
        for spelling in others:
            if not label_key(spelling):
                raise InputError(f"{origin}: non_expression_labels: an empty spelling is not allowed")
            if label_key(spelling) in expressions:
                raise InputError(f"{origin}: non_expression_labels.{spelling} is also in 'labels'; "
                                 "a spelling is an expression or not, not both")
        kw["non_expression_labels"] = others
    if "split_names" in data:
        split_names = _check_str_map(origin, "split_names", data["split_names"])
        for src, dst in split_names.items():
            if dst not in SPLITS:
                raise InputError(f"{origin}: split_names.{src} is {dst!r}; allowed: {', '.join(SPLITS)}")
        kw["split_names"] = split_names
    return kw


def _subject_and_counts(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """The validated `subject_pattern` and `expected_counts` of ``data``."""
    kw: dict[str, Any] = {}
    if "subject_pattern" in data:
        pat = data["subject_pattern"]
        if not isinstance(pat, str):
            raise InputError(f"{origin}: 'subject_pattern' must be a string, got {type(pat).__name__}")
        try:
            groups = re.compile(pat).groups
        except re.error as e:
            raise InputError(f"{origin}: 'subject_pattern' {pat!r} is not a valid regex: {e}") from None
        if groups < 1:
            raise InputError(f"{origin}: 'subject_pattern' {pat!r} needs a group (...) for the subject")
        costly = pattern_cost_problem(pat)
        if costly:
            raise InputError(f"{origin}: 'subject_pattern' {pat!r} could take unbounded time to match a file name "
                             f"({costly}): write it without nested or stacked quantifiers")
        kw["subject_pattern"] = pat
    if "expected_counts" in data:
        counts = data["expected_counts"]
        if not isinstance(counts, dict):
            raise InputError(f"{origin}: 'expected_counts' must be a table split = count, got {counts!r}")
        for split, n in counts.items():
            if split not in SPLITS:
                raise InputError(f"{origin}: expected_counts.{split}: unknown split; allowed: "
                                 f"{', '.join(SPLITS)}")
            if not _is_count(n):
                raise InputError(f"{origin}: expected_counts.{split} must be a count >= 0, got {n!r}")
        kw["expected_counts"] = dict(counts)
    return kw


def _label_file_keys(data: dict[str, Any], origin: str, fmt: str) -> dict[str, Any]:
    """The validated keys that describe label files (format ``labels`` only)."""
    given = [k for k in _LABEL_FILE_KEYS if k in data]
    if given and fmt != "labels":
        raise InputError(f"{origin}: {given[0]!r} applies only to format 'labels', not {fmt!r}")
    kw: dict[str, Any] = {}
    if "label_files" in data:
        files = data["label_files"]
        if not isinstance(files, list) or not files:
            raise InputError(f"{origin}: 'label_files' must be a non-empty list of paths relative to "
                             f"SOURCE, got {files!r}")
        paths = tuple(_check_relative_path(origin, "label_files", f, allow_empty=False) for f in files)
        if len(set(paths)) != len(paths):
            raise InputError(f"{origin}: 'label_files' names a file twice: {files!r}")
        kw["label_files"] = paths
    if "image_root" in data:
        kw["image_root"] = _check_relative_path(origin, "image_root", data["image_root"], allow_empty=True)
    if "image_name_suffix" in data:
        suffix = data["image_name_suffix"]
        if not isinstance(suffix, str) or any(c in suffix for c in "/\\\0"):
            raise InputError(f"{origin}: 'image_name_suffix' must be a string without '/' or '\\', "
                             f"got {suffix!r}")
        kw["image_name_suffix"] = suffix
    if "delimiter" in data:
        if data["delimiter"] not in DELIMITERS:
            raise InputError(f"{origin}: 'delimiter' is {data['delimiter']!r}; allowed: "
                             f"{', '.join(map(repr, DELIMITERS))}")
        kw["delimiter"] = data["delimiter"]
    kw.update(_column_keys(data, origin))
    return kw


def _column_keys(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """The validated `columns`, `box_columns` and `box_format` of ``data``."""
    kw: dict[str, Any] = {}
    if "columns" in data:
        table = data["columns"]
        if not isinstance(table, dict) or "path" not in table:
            raise InputError(f"{origin}: 'columns' must be a table with at least 'path' "
                             f"(roles: {', '.join(LABEL_FILE_COLUMNS)}), got {table!r}")
        for role in table:
            if role not in LABEL_FILE_COLUMNS:
                raise InputError(f"{origin}: columns.{role}: unknown role; allowed: "
                                 f"{', '.join(LABEL_FILE_COLUMNS)}")
        kw["columns"] = {role: _check_column(origin, f"columns.{role}", v) for role, v in table.items()}
    if "box_columns" in data:
        cols = data["box_columns"]
        if not isinstance(cols, list) or len(cols) != 4:
            raise InputError(f"{origin}: 'box_columns' must list 4 columns (names or indexes), got {cols!r}")
        kw["box_columns"] = tuple(_check_column(origin, "box_columns", c) for c in cols)
    if "box_format" in data:
        if data["box_format"] not in BOX_FORMATS:
            raise InputError(f"{origin}: 'box_format' is {data['box_format']!r}; allowed: "
                             f"{', '.join(BOX_FORMATS)}")
        kw["box_format"] = data["box_format"]
    if bool(kw.get("box_columns")) != bool(kw.get("box_format")):
        raise InputError(f"{origin}: 'box_columns' and 'box_format' go together; give both or neither")
    refs = [*kw.get("columns", {}).values(), *kw.get("box_columns", ())]
    named = [r.lower() if isinstance(r, str) else r for r in refs]
    if len(set(named)) != len(named):
        raise InputError(f"{origin}: 'columns' and 'box_columns' use a column twice: {refs!r}")
    if data.get("header") is False and any(isinstance(r, str) for r in refs):
        raise InputError(f"{origin}: 'header' is false, so 'columns' and 'box_columns' must be "
                         "0-based indexes, not names")
    return kw


def _check_split_sources(kw: dict[str, Any], origin: str) -> None:
    """At most one place gives the split (and subject), and a name-based split has `split_names`."""
    sources = [k for k, on in (("columns.split", "split" in kw.get("columns", {})),
                               ("split_from_filename_prefix", kw.get("split_from_filename_prefix")),
                               ("split_from_label_file", kw.get("split_from_label_file"))) if on]
    if len(sources) > 1:
        raise InputError(f"{origin}: the split can come from one place only, got {' and '.join(sources)}")
    for key in ("split_from_filename_prefix", "split_from_label_file"):
        if kw.get(key) and not kw.get("split_names"):
            raise InputError(f"{origin}: {key!r} needs a 'split_names' table "
                             "(source name -> train/val/test)")
    if "subject" in kw.get("columns", {}) and kw.get("subject_pattern"):
        raise InputError(f"{origin}: the subject can come from one place only, got columns.subject "
                         "and subject_pattern")


def datasets_dir() -> Path:
    """The folder holding the ``*.toml`` dataset descriptions: ``$FACEBLOCKS_DATASETS`` when set,
    else the package data ``prepro/datasets`` (in a source checkout a link to the top-level
    ``datasets/`` folder; in an installed wheel a copy of it), found with importlib.resources."""
    from importlib.resources import files

    env = os.environ.get(ENV_VAR)
    if env:
        # an explicit choice that does not exist is an error, not a reason to look elsewhere
        if not Path(env).is_dir():
            raise InputError(f"${ENV_VAR} is {env!r}, which is not a folder")
        return Path(env)
    folder = Path(str(files("prepro") / "datasets"))
    if not folder.is_dir():
        raise InputError(f"the dataset descriptions are missing from this install ({folder}): reinstall faceblocks, "
                         f"or set ${ENV_VAR} to a folder of dataset .toml files")
    return folder


def list_specs() -> list[str]:
    """Names of the dataset descriptions available in `datasets_dir`, sorted."""
    return sorted(p.stem for p in datasets_dir().glob("*.toml") if not p.name.startswith("."))


def load_spec(name_or_path: str) -> DatasetSpec:
    """Load a dataset description by name (``"ckplus"``) or from a ``.toml`` file path.

    Raises `InputError` for an unknown name (listing the available names) and for a file with an
    unknown key, a wrong type or a bad value.
    """
    text = str(name_or_path)
    is_path = text.lower().endswith(".toml") or os.sep in text or "/" in text
    if is_path:
        path = Path(text)
        if not path.is_file():
            raise InputError(f"dataset description file {text!r} does not exist")
    else:
        path = datasets_dir() / f"{text.lower()}.toml"
        if not path.is_file():
            raise InputError(f"unknown dataset {text!r}; available: {', '.join(list_specs())} "
                             "(or give the path of a .toml file)")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _spec_from_dict(data, str(path), path.stem)
