"""The label-file layout (AffectNet, RAF-DB, ...): which label files a source has, the folder their
image paths are relative to, and the split a file's name gives.
"""

from __future__ import annotations

import os
from pathlib import Path

from prepro.errors import InputError
from prepro.inputs import is_inside
from prepro.readers.label_rows import LabelFileLister
from prepro.readers.records import Failure, RawItem
from prepro.specs import DatasetSpec


def _file_stem(name: str) -> str:
    """A label file's name without folder and extension(s): "lists/training.csv.gz" -> "training"."""
    base = name.rsplit("/", 1)[-1]
    base = base[:-3] if base.lower().endswith(".gz") else base
    return os.path.splitext(base)[0]


def _label_files_of(root: Path, spec: DatasetSpec | None) -> tuple[Path, list[tuple[str, str]]]:
    """(base folder, [(label file path, name shown in messages)]) for a label-file source.

    ``root`` is the resolved SOURCE: the label file itself (its folder is the base), or a folder
    whose description names `label_files` relative to it. Raises `InputError` when they do not fit
    or a named file is missing or lies outside SOURCE.
    """
    if root.is_file():
        if spec is not None and spec.label_files:
            raise InputError(f"dataset {spec.name!r} names its label files ({', '.join(spec.label_files)}) "
                             f"relative to a folder: give that folder as SOURCE, not the file {root}")
        return root.parent, [(str(root), root.name)]
    if spec is None or not spec.label_files:
        raise InputError(f"format labels needs a label file as SOURCE, or a folder with a dataset "
                         f"description that names its 'label_files'; {root} is a folder")
    files = []
    for rel in spec.label_files:
        path = root / rel
        if not path.is_file():
            raise InputError(f"label file {rel} not found in {root} (dataset {spec.name!r} expects it there)")
        if not is_inside(path, root):
            raise InputError(f"label file {rel} in {root} is a link to a place outside the source; "
                             "not followed")
        files.append((str(path), rel))
    return root, files


def _file_split(shown: str, spec: DatasetSpec | None) -> str | None:
    """The split a label file's name gives when the description says so (`split_from_label_file`)."""
    if spec is None or not spec.split_from_label_file:
        return None
    stem = _file_stem(shown)
    names = {k.lower(): v for k, v in spec.split_names.items()}
    if stem.lower() not in names:
        raise InputError(f"label file {shown}: its name {stem!r} is not in split_names of dataset "
                         f"{spec.name!r} ({', '.join(spec.split_names)})")
    return names[stem.lower()]


def list_label_files(root: Path, spec: DatasetSpec | None, failures: list[Failure],
                 image_root: str | None = None) -> list[RawItem]:
    """The items of a label-file source (see `_label_files_of`); rows that cannot be used are
    appended to ``failures``. Image paths are relative to ``image_root`` (--image-root: absolute
    paths inside it are taken too), else to the description's `image_root`, else to the label
    file's folder."""
    base, files = _label_files_of(root, spec)
    if image_root is not None:
        folder, root_shown = Path(image_root), str(image_root)
        if not folder.is_dir():
            raise InputError(f"--image-root {root_shown} is not a folder")
        spellings = tuple(dict.fromkeys(Path(p).as_posix() for p in (os.path.abspath(folder),
                                                                     os.path.realpath(folder))))
    else:
        folder, root_shown, spellings = _described_image_folder(base, spec)
    splits = [_file_split(shown, spec) for _, shown in files]  # every name checked before reading
    lister = LabelFileLister(os.path.realpath(folder), root_shown, spec, failures, spellings)
    items: list[RawItem] = []
    for (path, shown), split in zip(files, splits):
        items += lister.list_file(path, shown, split)
    return items


def _described_image_folder(base: Path, spec: DatasetSpec | None) -> tuple[Path, str, tuple[str, ...]]:
    """(image folder, its name in messages, no absolute spellings) of a label-file source without
    --image-root: the description's `image_root` inside SOURCE, or SOURCE's folder."""
    root_shown = spec.image_root if spec is not None and spec.image_root else "."
    folder = base / spec.image_root if spec is not None and spec.image_root else base
    if not folder.is_dir():
        raise InputError(f"image folder {root_shown} not found in {base}"
                         + (f" (image_root of dataset {spec.name!r})" if spec is not None else ""))
    if not is_inside(folder, base):
        raise InputError(f"image folder {root_shown} in {base} is a link to a place outside the source; "
                         "not followed")
    return folder, root_shown, ()
