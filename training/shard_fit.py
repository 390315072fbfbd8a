"""Whether a shard folder fits a checkpoint: the block sizes it reads, and the block geometry it
was trained on.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from prepro.errors import MismatchError


# Block geometry that changes what a block shows (sizes are checked separately, by region).
_GEOMETRY_FLAGS = {"eyes_margin": "--eyes-margin", "mouth_margin": "--mouth-margin", "face_margin": "--face-margin",
                   "rotate": "--rotate/--no-rotate", "pad": "--pad"}


def check_block_sizes(shard_sizes: dict[str, Sequence[int]], ckpt_sizes: dict[str, Sequence[int]],
                      regions: Sequence[str], shards_dir: str | os.PathLike) -> None:
    for r in regions:
        have, want = list(shard_sizes.get(r, [])), list(ckpt_sizes.get(r, []))
        if have != want:
            h = "x".join(map(str, have)) or "no"
            w = "x".join(map(str, want))
            raise MismatchError(f"{shards_dir} has {r} blocks of {h} pixels but the model was trained on {w}: "
                                f"preprocess with --{r}-size {w} (or train a new model on these shards)")


def preprocessing_differences(shard_params: dict[str, Any], ckpt_params: dict[str, Any],
                              regions: Sequence[str]) -> list[str]:
    """How the shards' block geometry differs from the one a checkpoint was trained on, one line each.

    The face mode may differ (evaluating on another dataset); margins, rotation and padding of the
    blocks the model reads may not, since they change what the model sees, nor the landmark model
    that placed them (shards and checkpoints from before `--landmarks` were cut by dlib).
    """
    have, want = shard_params.get("blocks") or {}, ckpt_params.get("blocks") or {}
    if not want:
        return []
    keys = ["rotate", "pad"] + [f"{r}_margin" for r in regions]
    out = [f"{_GEOMETRY_FLAGS[k]} {want.get(k)!r} in training, {have.get(k)!r} here" for k in keys
           if have.get(k) != want.get(k)]
    cut_by, trained_on = shard_params.get("landmarks", "dlib"), ckpt_params.get("landmarks", "dlib")
    if cut_by != trained_on:
        out.append(f"--landmarks {trained_on!r} in training, {cut_by!r} here")
    return out


def require_cut_like_model(shards_dir: str | os.PathLike, manifest: Any, ckpt: dict[str, Any], ckpt_name: str,
                           allow_mismatch: bool | None = None) -> list[str]:
    """Refuse shards whose block sizes, margins, rotation or padding differ from those the checkpoint
    was trained on (`evaluate` and fine-tuning); returns the differences let through. ``allow_mismatch``
    None: no way around (the message offers none); False: refused, naming --allow-mismatch; True:
    the geometry differences are allowed (the sizes never are)."""
    regions = list(ckpt["regions"])
    check_block_sizes(manifest.block_sizes, ckpt["block_sizes"], regions, shards_dir)
    differences = preprocessing_differences(manifest.params, ckpt.get("preprocessing") or {}, regions)
    if differences and not allow_mismatch:
        escape = "" if allow_mismatch is None else ", or pass --allow-mismatch to evaluate anyway"
        raise MismatchError(f"{shards_dir} was cut differently from the shards {ckpt_name} was trained on "
                            f"({'; '.join(differences)}): preprocess again with the training values{escape}")
    return differences
