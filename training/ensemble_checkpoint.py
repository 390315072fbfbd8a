"""Join trained models into one `ensemble` checkpoint (`architectures.ensemble`).

The result is an ordinary checkpoint, so every command that takes a model takes it (predict,
evaluate, export-model, --init, a teacher). The members must agree on everything that decides what
their inputs and outputs mean: the class names in order, the normalisation, the block sizes of the
regions they share and how blocks are cut (every cutting setting but the face mode, which decides
only how faces are found in a photo: the first member's is the ensemble's). Their holdouts must be
the same, so that figures measured on the ensemble's holdout stay free of its members' training
faces; a member with none (a final fit, `val_split none`, such as the shipped fer2013 model)
trained on every face, so the ensemble has none either (val_split none: no holdout figures). The
ensemble's epoch is its members' latest; its card lists each member and its epoch.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from architectures.ensemble import union_regions
from prepro.errors import InputError, OutputError
from prepro.outputs import checked_output_file
from training.checkpoint import make_checkpoint, save_checkpoint, stored_cut_config
from training.config import NO_VALIDATION, TrainConfig
from training.model_names import resolve_checkpoint
from training.zoo import is_in_package


def combine_checkpoints(refs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The `ensemble` checkpoint of the models ``refs`` (run folders, .pt files, shipped names)."""
    return _combined(refs, [ck for _, ck in _members(refs)])


def write_ensemble(refs: Sequence[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the ensemble of ``refs`` to the checkpoint file ``out`` (atomically)."""
    members = _members(refs)
    if Path(out).is_file() and Path(out).resolve() in {p.resolve() for p, _ in members}:
        raise OutputError(f"{out} is one of the members: write the ensemble to another file")
    out = checked_output_file(out, overwrite, example="ensemble.pt")
    if is_in_package(out):
        raise OutputError(f"{out} lies inside faceblocks' own folders: write the ensemble elsewhere")
    save_checkpoint(_combined(refs, [ck for _, ck in members]), out)
    return out


def _members(refs: Sequence[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, checkpoint) of each of two or more different models."""
    if len(refs) < 2:
        raise InputError("an ensemble needs at least two models")
    loaded = [resolve_checkpoint(ref) for ref in refs]
    if len({p.resolve() for p, _ in loaded}) < len(loaded):
        raise InputError("the same model is named twice: an ensemble's members are different models")
    return loaded


def _combined(refs: Sequence[str | os.PathLike], ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ensemble checkpoint of the loaded members ``ckpts`` (named ``refs``)."""
    if any(ck["arch"] == "ensemble" for ck in ckpts):
        raise InputError("a member is itself an ensemble: name its members instead")
    first = ckpts[0]
    for ref, ck in zip(refs[1:], ckpts[1:]):
        _require_same(first, ck, f"{refs[0]} and {ref}")
    holdout = _holdout_source(refs, ckpts)
    block_sizes: dict[str, list[int]] = {}
    for ck in ckpts:
        block_sizes.update({r: ck["block_sizes"][r] for r in ck["regions"]})
    members = [{"arch": ck["arch"], "model_kwargs": ck["model_kwargs"]} for ck in ckpts]
    state = {f"members.{i}.{k}": v for i, ck in enumerate(ckpts) for k, v in ck["model"].items()}
    card = {"title": "ensemble of " + ", ".join(f"{ck['arch']} ({ref})" for ref, ck in zip(refs, ckpts)),
            "members": [{"model": str(ref), "arch": ck["arch"], "epoch": ck["epoch"],
                         "title": (ck.get("card") or {}).get("title", "")} for ref, ck in zip(refs, ckpts)]}
    return make_checkpoint(arch="ensemble", model_kwargs={"members": members}, class_names=first["class_names"],
                           regions=list(union_regions(ck["regions"] for ck in ckpts)),
                           block_sizes=block_sizes, preprocessing=first["preprocessing"],
                           normalization=first["normalization"], config=_ensemble_config(holdout, members),
                           model_state=state, epoch=max(ck["epoch"] for ck in ckpts), card=card)


def _require_same(a: dict[str, Any], b: dict[str, Any], which: str) -> None:
    """An InputError naming the first thing two members disagree on."""
    shared = [r for r in a["regions"] if r in b["regions"]]
    cut_a, cut_b = (dataclasses.replace(stored_cut_config(ck["preprocessing"]), face="auto") for ck in (a, b))
    checks = [
        ("class names", a["class_names"] == b["class_names"], f"{a['class_names']} vs {b['class_names']}"),
        ("normalisation", a["normalization"] == b["normalization"], f"{a['normalization']} vs {b['normalization']}"),
        ("block sizes", all(a["block_sizes"][r] == b["block_sizes"][r] for r in shared),
         f"{a['block_sizes']} vs {b['block_sizes']}"),
        ("block cutting", cut_a == cut_b, "their blocks were cut with other settings"),
    ]
    for what, same, detail in checks:
        if not same:
            raise _disagreement(which, what, detail)


def _disagreement(which: str, what: str, detail: Any) -> InputError:
    return InputError(f"{which} differ in their {what} ({str(detail)[:200]}): an ensemble's members must agree")


def _holdout_source(refs: Sequence[str | os.PathLike], ckpts: list[dict[str, Any]]) -> TrainConfig:
    """The member config whose split and holdout the ensemble records: a final fit's (val_split
    none: it trained on every face, so no holdout is free of training faces), else the holdout that
    every member must share."""
    configs = [TrainConfig.from_dict(ck["config"], where="a member's config: ") for ck in ckpts]
    final_fit = next((c for c in configs if c.val_split == NO_VALIDATION), None)
    if final_fit is not None:
        return final_fit
    keys = [(c.val_split,) if c.val_split != "holdout" else (c.val_split, *c.holdout_key) for c in configs]
    for ref, key in zip(refs[1:], keys[1:]):
        if key != keys[0]:
            raise _disagreement(f"{refs[0]} and {ref}", "holdout",
                                f"validation split, train split, fraction, seed {keys[0]} vs {key}")
    return configs[0]


def _ensemble_config(cfg: TrainConfig, members: list[dict[str, Any]]) -> dict[str, Any]:
    """The ensemble's config: its network and the split and holdout of ``cfg`` (`_holdout_source`);
    every other setting at its default (the members' own recipes are in their checkpoints)."""
    return TrainConfig(model="ensemble", model_kwargs={"members": members}, train_split=cfg.train_split,
                       val_split=cfg.val_split, holdout_frac=cfg.holdout_frac,
                       holdout_seed=cfg.holdout_seed_used).to_dict()
