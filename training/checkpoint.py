"""Self-describing checkpoints, saved atomically and loaded without executing code.

A checkpoint is a dict of plain tensors, dicts, lists, str, int, float, bool and None: enough to
rebuild the model (architecture, its arguments, class names, block sizes, normalisation), to judge
whether shards suit it (block sizes, preprocessing parameters), and to resume training exactly
(optimizer, scheduler, epoch, best metric, early-stopping counter, RNG states). Loading uses
``torch.load(weights_only=True)``, which refuses pickled Python objects instead of running them.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from architectures import create_model
from architectures.names import MODEL_NAMES
from prepro import __version__
from prepro.config import PreprocessConfig
from prepro.errors import InputError
from prepro.outputs import atomic_write
from prepro.settings import from_dict
from training.data import REGIONS
from training.errors import CheckpointError
from training.run_records import history_ok
from training.weight_average import ONLINE_KEY, UPDATES_KEY, stored_fields_ok

FORMAT = "faceblocks-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "faceblocks_version", "arch", "model_kwargs", "num_classes",
                 "class_names", "regions", "block_sizes", "normalization", "config", "model", "epoch")
RESUME_KEYS = ("optimizer", "scheduler", "step", "best_metric", "best_epoch", "bad_epochs", "rng", "history")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable values (lists, ints, tensors)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(*, arch: str, model_kwargs: dict[str, Any], class_names: list[str], regions: list[str],
                    block_sizes: dict[str, list[int]], preprocessing: dict[str, Any],
                    normalization: dict[str, float], config: dict[str, Any], model_state: dict[str, torch.Tensor],
                    epoch: int, **resume_state: Any) -> dict[str, Any]:
    """Assemble the checkpoint dict; ``resume_state`` holds the RESUME_KEYS (absent in export-only files)."""
    unknown = set(resume_state) - set(RESUME_KEYS) - {"metrics", "card", "init", "teachers", ONLINE_KEY, UPDATES_KEY}
    if unknown:
        raise TypeError(f"unexpected checkpoint field(s): {', '.join(sorted(unknown))}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "faceblocks_version": __version__,
        "arch": arch,
        "model_kwargs": model_kwargs,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "regions": list(regions),
        "block_sizes": {k: [int(v) for v in s] for k, s in block_sizes.items()},
        "preprocessing": preprocessing,
        "normalization": normalization,
        "config": config,
        # Tensors detached to CPU: a checkpoint written on a GPU loads anywhere.
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "epoch": int(epoch),
        **resume_state,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Write via a temporary file in the same folder and rename: a crash never leaves half a file.

    The archive is made in memory and then written: torch's zip writer reports a failed write
    (a full disk) as a RuntimeError that says nothing of the cause, while a plain write says
    "No space left on device" (an OutputError, the old file kept)."""
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    archive = io.BytesIO()
    torch.save(ckpt, archive)
    atomic_write(path, lambda f: f.write(archive.getbuffer()))


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, for_resume: bool = False) -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles arbitrary objects.

    Raises CheckpointError when the file is missing, damaged, holds pickled objects, lacks keys,
    or (when ``arch`` is given) was made for another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass a run folder or a .pt file written by `faceblocks train`")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(f"{path} is not a readable checkpoint (not a torch.save archive): it is damaged or "
                              "not a faceblocks checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global in a line such as "Unsupported global: GLOBAL posix.system".
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln), "")
        why = f" ({why[:160]})" if why else ""
        raise CheckpointError(f"{path} holds pickled Python objects that could run code when loaded; refused"
                              f"{why}. Only load checkpoints written by faceblocks") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:160]}): it is damaged or not a "
                              "faceblocks checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a faceblocks checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {ckpt.get('format_version')}; this faceblocks "
                              f"({__version__}) reads format {FORMAT_VERSION}: retrain or use a matching version")
    wanted = REQUIRED_KEYS + (RESUME_KEYS if for_resume else ())
    missing = [k for k in wanted if k not in ckpt]
    if missing:
        what = "resume training" if for_resume else "be used"
        raise CheckpointError(f"{path} lacks {', '.join(missing)} and cannot {what}: it is incomplete or "
                              "from an incompatible faceblocks version")
    problem = _type_problem(ckpt, for_resume)
    if problem:
        raise CheckpointError(f"{path} is damaged or not a faceblocks checkpoint ({problem})")
    if arch is not None and ckpt["arch"] != arch:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} model, not {arch!r}: use --model {ckpt['arch']} "
                              "or another run folder")
    return ckpt


def _type_problem(ckpt: dict[str, Any], for_resume: bool) -> str | None:
    """What is wrong with the types and values of a checkpoint's fields (None when nothing)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks = [
        ("arch", ckpt["arch"] in MODEL_NAMES),
        ("model_kwargs", isinstance(ckpt["model_kwargs"], dict)),
        ("class_names", _class_names_ok(ckpt["class_names"])),
        ("num_classes", is_int(ckpt["num_classes"]) and ckpt["num_classes"] == len(ckpt["class_names"])),
        ("regions", isinstance(ckpt["regions"], list) and bool(ckpt["regions"]) and all(r in REGIONS for r in ckpt["regions"])),
        ("block_sizes", isinstance(ckpt["block_sizes"], dict) and all(
            isinstance(v, list) and len(v) == 2 and all(is_int(x) and 1 <= x <= 4096 for x in v)
            for v in ckpt["block_sizes"].values()) and all(r in ckpt["block_sizes"] for r in ckpt["regions"])),
        ("normalization", isinstance(ckpt["normalization"], dict) and all(
            isinstance(ckpt["normalization"].get(k), float) and np.isfinite(ckpt["normalization"][k])
            for k in ("mean", "std")) and ckpt["normalization"]["std"] > 0),
        ("config", isinstance(ckpt["config"], dict)),
        ("preprocessing", _preprocessing_ok(ckpt.get("preprocessing", {}))),
        ("card", isinstance(ckpt.get("card", {}), dict)),
        ("teachers", ckpt.get("teachers") is None or (isinstance(ckpt["teachers"], list) and all(
            isinstance(t, dict) for t in ckpt["teachers"]))),
        ("epoch", is_int(ckpt["epoch"]) and ckpt["epoch"] >= 0),
        ("online_model/ema_updates", stored_fields_ok(ckpt)),
        ("model", isinstance(ckpt["model"], dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items())),
    ]
    if for_resume:
        checks += _resume_checks(ckpt, is_int)
    bad = [k for k, ok in checks if not ok]
    if bad:
        return f"bad {', '.join(bad)}"
    for k, v in ckpt["model"].items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            return f"weight {k} holds NaN or infinite values"
        if k.endswith("running_var") and v.is_floating_point() and (v < 0).any():
            return f"weight {k} holds a negative variance"
    return None


def _class_names_ok(names: Any) -> bool:
    """At least two distinct class names, each printable text (a name is printed as a label, and two
    equal names would make their probabilities indistinguishable)."""
    return (isinstance(names, list) and len(names) >= 2 and all(isinstance(c, str) and c.strip() and c.isprintable()
                                                                 for c in names) and len(set(names)) == len(names))


def _preprocessing_ok(preprocessing: Any) -> bool:
    """A table whose settings for cutting new images (`stored_cut_config`) are valid."""
    if not isinstance(preprocessing, dict):
        return False
    try:
        stored_cut_config(preprocessing)
    except InputError:
        return False
    return True


# What a checkpoint's preprocessing decides for new images (the rest describes its training shards).
CUT_KEYS = ("face", "detection", "blocks", "second_look", "landmarks", "auto_trust", "max_megapixels",
            "work_max_side")


def stored_cut_config(preprocessing: dict[str, Any]):
    """The `PreprocessConfig` of a checkpoint's recorded preprocessing (its `CUT_KEYS`; defaults
    for the others); an InputError when they are not valid settings."""
    return from_dict(PreprocessConfig, {k: v for k, v in preprocessing.items() if k in CUT_KEYS})


def _resume_checks(ckpt: dict[str, Any], is_int) -> list[tuple[str, bool]]:
    """The fields only resuming reads: the run's counters must agree with its epoch and its
    history hold one finite log row per epoch (a forged value would end the resumed run in a
    traceback, or stop best.pt from ever being updated)."""
    import math

    epoch = ckpt["epoch"] if is_int(ckpt["epoch"]) else -1
    checks = [(k, isinstance(ckpt[k], dict)) for k in ("optimizer", "scheduler", "rng")]
    checks += [(k, is_int(ckpt[k]) and 0 <= ckpt[k] <= 2**62) for k in ("step", "best_epoch", "bad_epochs")]
    checks += [("best_epoch", is_int(ckpt["best_epoch"]) and ckpt["best_epoch"] <= epoch),
               ("bad_epochs", is_int(ckpt["bad_epochs"]) and ckpt["bad_epochs"] <= epoch),
               # -1 before the first epoch, then a macro-F1: anything else no later epoch could beat, or all would
               ("best_metric", isinstance(ckpt["best_metric"], float) and math.isfinite(ckpt["best_metric"])
                and -1 <= ckpt["best_metric"] <= 1),
               ("history", history_ok(ckpt["history"], epoch))]
    return checks


def require_finite_outputs(path: str | os.PathLike, *outputs: np.ndarray) -> None:
    """Refuse a model whose probabilities or region weights are not finite: finite weights can
    still overflow (far too large ones), and a NaN must never be printed, stored or given a label."""
    if not all(np.isfinite(o).all() for o in outputs):
        raise CheckpointError(f"{path}: its model computes values that are not finite (overflowing weights?); "
                              "the checkpoint is damaged: retrain, or use another checkpoint")


def build_model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """The checkpoint's model with its weights loaded (in eval mode)."""
    model = create_model(ckpt["arch"], ckpt["num_classes"], **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = " ".join(str(e).split())
        raise CheckpointError(f"checkpoint weights do not fit the {ckpt['arch']!r} model ({first[:200]}): the "
                              "file is damaged or from an incompatible faceblocks version") from None
    return model.eval()
