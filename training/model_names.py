"""What a model name given on the command line or to the API means: a run folder (its best.pt), a
checkpoint file, or the name of a model shipped with faceblocks.

Its own module so that the checkpoint format, the run folder and the zoo need not know each other.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from training.checkpoint import load_checkpoint
from training.errors import CheckpointError
from training.run_folder import RunFolder
from training.zoo import shipped_model_path


def resolve_checkpoint(ref: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(path, loaded checkpoint) for a run folder (its best.pt), a .pt file, or the name of a
    model shipped with faceblocks; an existing path of that name wins over a shipped model."""
    p = Path(ref)
    if p.is_dir():
        folder = RunFolder(p)
        if not folder.best.is_file():
            raise CheckpointError(f"{p} holds no best.pt: pass a run folder written by `faceblocks train` or a .pt file")
        if not folder.finished():
            warnings.warn(f"{p} holds a run that did not finish (stopped or killed; no result.json): using its "
                          "best epoch so far", stacklevel=2)
        p = folder.best
    elif not p.exists() and is_bare_name(ref):
        p = shipped_model_path(str(ref))
    return p, load_checkpoint(p)  # a missing path: "no checkpoint at PATH"


def is_bare_name(ref: str | os.PathLike) -> bool:
    """True when ``ref`` can name a shipped model: no folder part and no .pt suffix (a missing
    ``runs/x/best.pt`` is a missing checkpoint, not an unknown model)."""
    text = os.fspath(ref)
    return os.sep not in text and "/" not in text and not text.endswith(".pt")
