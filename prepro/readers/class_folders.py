"""The class-folder layout: ROOT/<label>/* or ROOT/<split>/<label>/* (Kaggle's FER2013 folders
also carry the split in a file-name prefix).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from prepro.errors import InputError
from prepro.labels import CANONICAL_LABELS, UnknownLabelError, canonical_label
from prepro.readers.names import FER2013_SPLIT_NAMES, label_or_reason, prefix_pattern, split_folder_names, subject_from_name
from prepro.readers.records import RawItem
from prepro.readers.walker import Walker
from prepro.specs import DatasetSpec


def find_classes(directory: str | os.PathLike, extra_aliases: Mapping[str, str] | None = None,
                 ) -> tuple[list[str], dict[str, int]]:
    """Class folders of ``directory``: (sorted folder names, folder name -> label index).

    Like torchvision's ``find_classes``, but the index is the position of the folder's canonical
    label in `CANONICAL_LABELS` (so "anger" and "angry" both give 0). Folders whose name is no
    known label are in the first list but not in the mapping; `list_source` reports their files.
    """
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise InputError(f"no class folders in {directory}")
    class_to_idx = {}
    for c in classes:
        try:
            class_to_idx[c] = CANONICAL_LABELS.index(canonical_label(c, extra_aliases))
        except UnknownLabelError:
            pass  # reported per file by the listing, with the allowed labels
    return classes, class_to_idx


def list_class_folders(w: Walker, spec: DatasetSpec | None) -> list[RawItem]:
    """Items of ROOT/<label>/* or ROOT/<split>/<label>/* (split also from FER2013 name prefixes)."""
    root = str(w.root)
    got = w.entries(root)
    if got is None:
        return []
    top_dirs, top_files = got
    groups = _class_groups(w, top_dirs, top_files, spec)

    if spec is not None and spec.split_from_filename_prefix:
        prefix_names: Mapping[str, str] = spec.split_names
    else:
        prefix_names = FER2013_SPLIT_NAMES
    prefix_re = prefix_pattern(prefix_names)

    items: list[RawItem] = []
    for split, files in groups:
        items += _group_items(w, split, files, spec, prefix_names, prefix_re)
    return items


def _class_groups(w: Walker, top_dirs: list[str], top_files: list[str], spec: DatasetSpec | None
                  ) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """(split folder's split or None, [(path, label)]) per split folder, or one group for ROOT's
    class folders; files outside a class folder become failures."""
    split_names = split_folder_names(spec)
    split_layout = any(os.path.basename(d).lower() in split_names for d in top_dirs)

    for f in top_files:
        where = "ROOT/<split>/<label>/<file>" if split_layout else "ROOT/<label>/<file>"
        w.fail(f, f"not inside a class folder (expected {where})")

    groups: list[tuple[str | None, list[tuple[str, str]]]] = []
    if split_layout:
        for d in top_dirs:
            split = split_names.get(os.path.basename(d).lower())
            if split is None:
                w.fail_all(d, f"folder {os.path.basename(d)!r} is not a split folder; allowed: "
                              f"{', '.join(sorted(split_names))}")
                continue
            sub = w.entries(d)
            if sub is None:
                continue
            class_dirs, stray = sub
            for f in stray:
                w.fail(f, "not inside a class folder (expected ROOT/<split>/<label>/<file>)")
            groups.append((split, _class_files(w, class_dirs, spec)))
    else:
        groups.append((None, _class_files(w, top_dirs, spec)))
    return groups


def _group_items(w: Walker, split: str | None, files: list[tuple[str, str]], spec: DatasetSpec | None,
                 prefix_names: Mapping[str, str], prefix_re: re.Pattern[str]) -> list[RawItem]:
    """The items of one group's (path, label) files, each with its split and subject."""
    items: list[RawItem] = []
    by_prefix = bool(spec is not None and spec.split_from_filename_prefix)
    if not by_prefix and split == "test" and files:
        # Kaggle's FER2013 test/ folder holds both the public and the private test halves;
        # they differ only by the file-name prefix. When every file there carries such a
        # prefix, the prefix decides (PublicTest -> val, PrivateTest -> test), spec or not.
        by_prefix = all(prefix_re.match(os.path.basename(p)) for p, _ in files)
    for path, label in files:
        name = os.path.basename(path)
        item_split = split
        if by_prefix:
            m = prefix_re.match(name)
            if m is None:
                w.fail(path, "file name has no split prefix (expected one of "
                             f"{', '.join(k + '_' for k in prefix_names)})")
                continue
            item_split = prefix_names[m.group(1)]
        subject, why = subject_from_name(name, spec)
        if why:
            w.fail(path, why)
            continue
        items.append(RawItem(w.rel(path), path, label, item_split, subject))
    return items


def _class_files(w: Walker, class_dirs: list[str], spec: DatasetSpec | None) -> list[tuple[str, str]]:
    """(image path, label) below each class folder; a folder with an unknown label fails whole."""
    out = []
    for d in class_dirs:
        name = os.path.basename(d)
        label, why = label_or_reason(name, spec)
        if label is None:
            w.fail_all(d, f"class folder {name!r}: {why}")
            continue
        out.extend((p, label) for p in w.images(d))
    return out
