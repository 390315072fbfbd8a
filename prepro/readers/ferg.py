"""The FERG-DB layout: ROOT/<character>/<character>_<emotion>/*.png; the character is the subject.
"""

from __future__ import annotations

import os

from prepro.readers.names import label_or_reason
from prepro.readers.records import RawItem
from prepro.readers.walker import Walker
from prepro.specs import DatasetSpec


def list_ferg(w: Walker, spec: DatasetSpec | None) -> list[RawItem]:
    """Items of ROOT/<character>/<character>_<emotion>/*; the character is the subject."""
    got = w.entries(str(w.root))
    if got is None:
        return []
    chars, top_files = got
    expected = "expected ROOT/<character>/<character>_<emotion>/<file>"
    for f in top_files:
        w.fail(f, f"not inside a character folder ({expected})")
    items = []
    for cdir in chars:
        character = os.path.basename(cdir)
        sub = w.entries(cdir)
        if sub is None:
            continue
        emo_dirs, stray = sub
        for f in stray:
            w.fail(f, f"not inside an emotion folder ({expected})")
        for edir in emo_dirs:
            ename = os.path.basename(edir)
            if not ename.lower().startswith(character.lower() + "_"):
                w.fail_all(edir, f"folder {ename!r} is not named {character}_<emotion> ({expected})")
                continue
            label, why = label_or_reason(ename[len(character) + 1:], spec)
            if label is None:
                w.fail_all(edir, f"emotion folder {ename!r}: {why}")
                continue
            # the character is the identity: FERG has one rendered character per folder
            items.extend(RawItem(w.rel(p), p, label, None, character) for p in w.images(edir))
    return items
