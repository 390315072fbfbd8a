"""Which layout a source has (`detect_format`), and listing it in that layout (`list_source`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from prepro.errors import InputError
from prepro.inputs import IMG_EXTENSIONS, is_image_file
from prepro.labels import UnknownLabelError, canonical_label, normalize_label_name
from prepro.readers.class_folders import list_class_folders
from prepro.readers.fer2013_csv import list_csv
from prepro.readers.ferg import list_ferg
from prepro.readers.ferplus import list_ferplus
from prepro.readers.jaffe_and_flat import JAFFE_PATTERN, list_flat, list_jaffe
from prepro.readers.label_columns import LABEL_FILE_SUFFIXES, looks_like_label_file
from prepro.readers.label_files import list_label_files
from prepro.readers.names import SPLIT_FOLDER_NAMES
from prepro.readers.records import Failure, Listing, RawItem, SourceNotFoundError
from prepro.readers.text_files import first_line
from prepro.readers.walker import Walker
from prepro.specs import FORMATS, DatasetSpec, load_spec
from prepro.splits import order_key


def detect_format(path: str | os.PathLike) -> str:
    """Guess the layout of ``path``; the rules, in order:

    1. a file named ``*.csv`` or ``*.csv.gz`` -> ``fer2013-csv`` when its header has a ``pixels``
       column, else ``labels``;
    1b. a file named ``*.tsv`` or ``*.txt`` (also ``.gz``) -> ``labels`` when its first line is a
       header naming an image-path column, or a row whose first field is an image file name
       followed by a label;
    2. a folder whose images directly inside all match the JAFFE pattern (KA.AN1.39.tiff) -> ``jaffe``;
    3. a folder of ``<x>/`` folders that each hold only ``<x>_<something>/`` folders -> ``ferg``;
    4. a folder with a split folder (train, val, test, ...) or a sub-folder named like a label
       (angry, anger, joy, ...) -> ``folder``;
    5. a folder with images directly inside -> ``flat``.

    Anything else raises `InputError`; a nested folder of unlabelled images needs an explicit
    ``flat`` so that misspelt class folders are never taken silently as unlabelled data. A file that
    cannot be read raises `InputError` naming it; a missing path `SourceNotFoundError`.
    """
    p = Path(path)
    allowed = ", ".join(FORMATS[1:])
    if p.is_file():
        return _detect_file_format(p, allowed)
    if not p.is_dir():
        raise SourceNotFoundError(f"source {str(p)!r} does not exist")
    try:
        entries = [e for e in sorted(os.scandir(p), key=lambda e: e.name) if not e.name.startswith(".")]
    except OSError as e:
        raise InputError(f"{p}: the folder cannot be read ({e.strerror or e})") from None
    dirs = [e for e in entries if e.is_dir()]
    images = [e.name for e in entries if e.is_file() and is_image_file(e.name)]

    if images and all(JAFFE_PATTERN.match(n) for n in images):
        return "jaffe"
    if dirs and not images and _class_folders_of_jaffe_names(dirs):
        return "jaffe"  # JAFFE sorted into class folders: the names still carry subject and label
    if dirs and all(_looks_like_ferg_character(e.path, e.name) for e in dirs):
        return "ferg"
    for e in dirs:
        if e.name.lower() in SPLIT_FOLDER_NAMES:
            return "folder"
        try:
            canonical_label(e.name)
            return "folder"
        except UnknownLabelError:
            pass
    if images:
        return "flat"
    raise InputError(
        f"cannot tell the layout of {p}: no label or split folders, no <x>/<x>_<emotion>/ folders "
        f"and no images directly inside; choose a format: {allowed}")


def _detect_file_format(p: Path, allowed: str) -> str:
    """The format of the file ``p``: the FER2013 CSV or a label file (rules 1 and 1b of
    `detect_format`); raises `InputError` when it is neither."""
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        names = [normalize_label_name(f.strip().strip('"')) for f in first_line(p).split(",")]
        return "fer2013-csv" if "pixels" in names else "labels"
    if name.endswith(LABEL_FILE_SUFFIXES):
        if looks_like_label_file(first_line(p)):
            return "labels"
        raise InputError(f"{p}: cannot tell whether this is a label file (its first line is neither a "
                         "header naming an image-path column nor '<image file> <label>'); give "
                         "--format labels with a dataset description, or choose a format: " + allowed)
    raise InputError(f"{p} is a file but not a .csv, .csv.gz, .tsv or .txt; choose a format: {allowed}")


def _class_folders_of_jaffe_names(dirs: list) -> bool:
    """True when every folder holds only images (at least one in all), each named as JAFFE's are."""
    names = []
    for d in dirs:
        try:
            entries = [e for e in os.scandir(d.path) if not e.name.startswith(".")]
        except OSError:
            return False
        if any(not e.is_file() for e in entries):
            return False
        names += [e.name for e in entries if is_image_file(e.name)]
    return bool(names) and all(JAFFE_PATTERN.match(n) for n in names)


def _looks_like_ferg_character(path: str, name: str) -> bool:
    """True when every sub-folder of ``path`` is named ``<name>_<something>`` (a FERG character)."""
    try:
        subs = [e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return bool(subs) and all(s.lower().startswith(name.lower() + "_") for s in subs)


def list_source(path: str, fmt: str = "auto", spec: DatasetSpec | None = None,
                image_root: str | None = None, votes_file: str | None = None) -> Listing:
    """List the items of the source at ``path`` in format ``fmt`` (one of `FORMATS`).

    A ``spec`` supplies label spellings, split names and the subject pattern (and, for label files,
    where the files, images and columns are); with ``fmt="auto"`` its format is used. Without a
    spec, the CSV format uses the builtin ``fer2013-csv`` description (its 0..6 emotion codes).
    ``image_root`` is the folder a label file's image paths are relative to (label files only);
    ``votes_file`` is FER+'s vote file (format ferplus only; default: fer2013new.csv beside the CSV).
    Raises `SourceNotFoundError` for a missing source and `InputError` for a source that cannot be
    listed (unknown or contradicting format, unreadable file, nothing usable in it).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    src = Path(path)
    if not src.exists():
        raise SourceNotFoundError(f"source {str(path)!r} does not exist")
    if spec is not None:
        if fmt == "auto":
            fmt = spec.format
        elif fmt != spec.format:
            raise InputError(f"format {fmt!r} contradicts dataset {spec.name!r}, whose format is "
                                     f"{spec.format!r}; leave the format on auto")
    if fmt == "auto":
        fmt = detect_format(src)
    if spec is None and fmt in ("fer2013-csv", "ferplus"):
        spec = load_spec("fer2013-csv" if fmt == "fer2013-csv" else "ferplus")
    root = src.resolve()
    if image_root is not None and fmt != "labels":
        raise InputError(f"--image-root only applies to label files; {path} is read as format {fmt}")
    if votes_file is not None and fmt != "ferplus":
        raise InputError(f"--votes-file only applies to FER+ (--dataset ferplus); {path} is read as format {fmt}")

    items, failures, looked_for = _list_in_format(fmt, root, path, spec, image_root, votes_file)
    if not items:
        detail = ""
        if failures:
            shown = "; ".join(f"{f.source}: {f.reason}" for f in failures[:3])
            detail = f"; {len(failures)} entries could not be used, e.g. {shown}"
        raise InputError(f"no usable items in {path} (format {fmt}); looked for {looked_for}{detail}")
    items.sort(key=order_key)
    failures.sort(key=lambda f: (f.source, f.reason))
    return Listing(format=fmt, root=str(root), items=items, failures=failures, spec=spec)


def _list_in_format(fmt: str, root: Path, path: str, spec: DatasetSpec | None, image_root: str | None,
                    votes_file: str | None = None) -> tuple[list[RawItem], list[Failure], str]:
    """(items, failures, what was looked for, in words) of the resolved source ``root`` listed in
    the format ``fmt`` (``path``: the source as given, for messages)."""
    failures: list[Failure] = []
    if fmt in ("fer2013-csv", "ferplus"):
        if not root.is_file():
            raise InputError(f"format {fmt} needs a .csv or .csv.gz file; {path} is a folder")
        if fmt == "ferplus":
            items = list_ferplus(str(root), spec, failures, votes_file)
        else:
            items = list_csv(str(root), spec, failures)
        looked_for = "CSV rows emotion,pixels[,Usage]" + (" with a FER+ majority label" if fmt == "ferplus" else "")
    elif fmt == "labels":
        items = list_label_files(root, spec, failures, image_root)
        looked_for = "rows naming an existing image file (and its label) in the label file(s)"
    else:
        if not root.is_dir():
            raise InputError(f"format {fmt} needs a folder; {path} is a file")
        w = Walker(root)
        lister = {"folder": list_class_folders, "ferg": list_ferg, "jaffe": list_jaffe, "flat": list_flat}[fmt]
        items = lister(w, spec)
        failures = w.failures
        looked_for = {
            "folder": "images in ROOT/<label>/ or ROOT/<split>/<label>/ folders",
            "ferg": "images in ROOT/<character>/<character>_<emotion>/ folders",
            "jaffe": "JAFFE-named images (KA.AN1.39.tiff, KA-AN1.jpeg)",
            "flat": "images",
        }[fmt] + f" ({' '.join(IMG_EXTENSIONS)})"
    return items, failures, looked_for


def count_mismatches(items: list[RawItem], spec: DatasetSpec | None) -> list[str]:
    """Messages for each split whose item count differs from the spec's `expected_counts`."""
    if spec is None or not spec.expected_counts:
        return []
    have = Counter(it.split for it in items)
    return [f"{spec.name}: {have.get(split, 0)} {split} items, expected {n}"
            for split, n in spec.expected_counts.items() if have.get(split, 0) != n]
