"""Where the columns of a label file are (path, label, split, subject, face box), from its first
line and the dataset description; and whether a first line is a label file's at all.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass

from prepro.errors import InputError
from prepro.inputs import is_image_file, printable
from prepro.labels import normalize_label_name
from prepro.specs import VALUE_COLUMNS, DatasetSpec


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


@dataclass(frozen=True)
class LabelFileLayout:
    """Where the columns of one label file are, and how its lines split into fields."""

    delimiter: str                          # one character, or "" for runs of whitespace
    header: bool                            # the first line names the columns (and is no row)
    path: int                               # 0-based column of the image path
    label: int | None                       # column of the label; None: unlabelled rows
    split: int | None                       # column of the split name; None: split from elsewhere
    subject: int | None                     # column of the subject; None: no subject column
    box: tuple[int, int, int, int] | None   # face-box columns in `box_format` order; None: no box
    box_format: str                         # "xywh" | "ltrb"; "" without a box
    values: tuple[tuple[str, int], ...] = ()  # (value name, column) of the `VALUE_COLUMNS` the description names
    min_fields: int = 0                     # fields a row needs so that every used column is there

    def __post_init__(self) -> None:
        """Compute `min_fields` from the columns (once, not per row)."""
        used = [self.path, self.label, self.split, self.subject, *(self.box or ()), *(c for _, c in self.values)]
        object.__setattr__(self, "min_fields", max(i for i in used if i is not None) + 1)


def _auto_delimiter(line: str) -> str:
    """The delimiter of a label file from its first line: tab, else comma, else semicolon, else
    runs of whitespace ("")."""
    for candidate in ("\t", ",", ";"):
        if candidate in line:
            return candidate
    return ""


def split_line(text: str, delimiter: str) -> list[str]:
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


def looks_like_label_file(line: str) -> bool:
    """True when ``line`` is unmistakably the first line of a label file: a header naming an
    image-path column, or an image file name followed by at least one more field."""
    try:
        fields = split_line(line, _auto_delimiter(line))
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


def label_file_layout(first: str, spec: DatasetSpec | None, shown: str,
                       split_elsewhere: bool) -> LabelFileLayout:
    """Where each column of a label file is, from its first line and the dataset description.

    ``split_elsewhere``: the description takes the split from the file name or prefix, so a split
    column found in the header is not used.
    """
    delimiter = spec.delimiter if spec is not None else "auto"
    if delimiter == "auto":
        delimiter = _auto_delimiter(first)
    elif delimiter == "whitespace":
        delimiter = ""
    fields = split_line(first, delimiter) if first else []
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
    return LabelFileLayout(delimiter, header, cols["path"], cols.get("label"), cols.get("split"),
                            cols.get("subject"), box, box_format,
                            tuple((name, cols[name]) for name in VALUE_COLUMNS if name in cols))
