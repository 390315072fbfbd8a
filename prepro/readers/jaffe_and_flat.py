"""Folders of images read by their names alone: JAFFE's names carry subject and expression; a flat
folder's images are unlabelled.
"""

from __future__ import annotations

import os
import re

from prepro.readers.names import label_or_reason, subject_from_name
from prepro.readers.records import RawItem
from prepro.readers.walker import Walker
from prepro.specs import DatasetSpec


# KA.AN1.39.tiff: subject KA, expression AN, picture 1 of it, image number 39; copies found online
# also spell it KA-AN1.jpeg or KA_AN1_39.png (the image number may be missing).
JAFFE_PATTERN = re.compile(r"^([A-Za-z]{2})[._-]([A-Za-z]{2})\d*(?:[._-]\d+)?\.[A-Za-z]+$")


def list_jaffe(w: Walker, spec: DatasetSpec | None) -> list[RawItem]:
    """Items of a folder of JAFFE-named images; label and subject come from the name."""
    items = []
    for path in w.images(str(w.root)):
        name = os.path.basename(path)
        m = JAFFE_PATTERN.match(name)
        if m is None:
            w.fail(path, "name does not match the JAFFE pattern <subject>.<expression><n>.<number>.<ext> "
                         "(e.g. KA.AN1.39.tiff or KA-AN1.jpeg)")
            continue
        label, why = label_or_reason(m.group(2), spec)
        if label is None:
            w.fail(path, f"expression code {m.group(2)!r}: {why}")
            continue
        subject, why = subject_from_name(name, spec)
        if why:
            w.fail(path, why)
            continue
        items.append(RawItem(w.rel(path), path, label, None, subject or m.group(1)))
    return items


def list_flat(w: Walker, spec: DatasetSpec | None) -> list[RawItem]:
    """Unlabelled items: every image below the root."""
    items = []
    for path in w.images(str(w.root)):
        subject, why = subject_from_name(os.path.basename(path), spec)
        if why:
            w.fail(path, why)
            continue
        items.append(RawItem(w.rel(path), path, None, None, subject))
    return items
