"""Models that ship inside the package (``training/models/<name>.pt``).

A shipped model's name works wherever a run folder or checkpoint is accepted (`faceblocks predict
fer2013 photo.jpg`, ``evaluate``, ``export-model``, ``Classifier.load("fer2013")``); an existing
path of the same name wins. Each is an ordinary checkpoint (weights stored as float16, no
optimiser state, loaded with ``weights_only=True``) with a model card under ``"card"``: data,
recipe, training time and machine, test figures, the preprocessing it expects, and the terms.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from prepro.cut_settings import BlockConfig
from prepro.errors import InputError
from prepro.inputs import is_inside
from prepro.outputs import atomic_write_text, sha256_file

MODELS_DIR = Path(__file__).with_name("models")


def package_dirs() -> list[Path]:
    """The folders of faceblocks' own packages and of its shipped models: nothing but an install
    writes there (a shipped model's folder is no run folder)."""
    # found, not imported: this module sits below inference and the public API in the house
    packages = ("faceblocks", "prepro", "training", "inference", "architectures")
    return [Path(importlib.util.find_spec(p).origin).resolve().parent for p in packages] + [MODELS_DIR]


def is_in_package(path: str | Path) -> bool:
    """True when ``path`` is, or lies inside, one of `package_dirs`."""
    return any(is_inside(path, folder) for folder in package_dirs())


TEACHER_FIELDS = ("model", "sha256", "arch", "epoch")  # of a teacher's record kept in a shipped model


def shipped_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.pt")) if MODELS_DIR.is_dir() else []


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model ``name``; InputError naming what ships when there is none."""
    names = shipped_names()
    if name not in names:
        shipped = f"the models shipped are: {', '.join(names)}" if names else "no model ships with this install"
        raise InputError(f"{name!r} is neither a run folder, a checkpoint file nor a shipped model; {shipped}")
    return MODELS_DIR / f"{name}.pt"


def card_path(name: str, models_dir: Path = MODELS_DIR) -> Path:
    """The card's JSON copy beside the weights, so that `faceblocks models` and `--version` need no torch."""
    return models_dir / f"{name}.card.json"


def shipped_cards() -> dict[str, dict[str, Any]]:
    """name -> model card of every shipped model."""
    return {name: entry["card"] for name, entry in _shipped_entries().items()}


def shipped_parameters() -> dict[str, int]:
    """name -> the parameter count of every shipped model's network."""
    return {name: entry["parameters"] for name, entry in _shipped_entries().items()}


def shipped_geometry() -> dict[str, dict[str, Any]]:
    """name -> the block-cutting geometry of every shipped model (`prepro.blocks.cutting_geometry`)."""
    return {name: entry["geometry"] for name, entry in _shipped_entries().items()}


def _shipped_entries() -> dict[str, dict[str, Any]]:
    """name -> {"card", "parameters", "geometry"} of every shipped model, from its JSON copy; from
    the checkpoint if that is missing, unreadable or older than one of them."""
    entries = {}
    for name in shipped_names():
        try:
            copy = json.loads(card_path(name).read_text(encoding="utf-8"))
            entries[name] = {"card": copy["card"], "parameters": int(copy["parameters"]),
                             "geometry": dict(copy["geometry"])}
        except (OSError, ValueError, KeyError, TypeError):
            # imported here: keeps faceblocks -h fast (numpy, torch)
            from training.checkpoint import load_checkpoint

            ck = load_checkpoint(MODELS_DIR / f"{name}.pt")
            entries[name] = {"card": dict(ck.get("card") or {}), "parameters": parameter_count(ck),
                             "geometry": checkpoint_geometry(ck)}
    return entries


def checkpoint_geometry(ckpt: dict[str, Any]) -> dict[str, Any]:
    """How a checkpoint's blocks are cut from 68 landmarks, for users without faceblocks."""
    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.blocks import cutting_geometry

    return cutting_geometry(BlockConfig.from_dict(ckpt["preprocessing"]["blocks"]))


def parameter_count(ckpt: dict[str, Any]) -> int:
    """The parameters of a checkpoint's network, counted on torch's meta device (no weights loaded)."""
    # imported here: keeps faceblocks -h fast (torch)
    from architectures import check_model_arguments

    return check_model_arguments(ckpt["arch"], ckpt["num_classes"], ckpt["model_kwargs"])


def shipped_cards_json() -> dict[str, dict[str, Any]]:
    """Every shipped model's card with its network's parameter count and block geometry."""
    parameters, geometry = shipped_parameters(), shipped_geometry()
    return {name: {**card, "parameters": parameters[name], "geometry": geometry[name]}
            for name, card in shipped_cards().items()}


def format_cards() -> str:
    """Every shipped model's card as text."""
    parameters = shipped_parameters()
    return "\n".join(format_card(name, card, parameters[name]) for name, card in shipped_cards().items())


def format_card(name: str, card: dict[str, Any], parameters: int | None = None) -> str:
    """A model card as text for the terminal (with the network's parameter count when given)."""
    lines = [f"{name}: {card.get('title', '')}"]
    if parameters is not None:
        lines.append(f"  network: {parameters:,} parameters")
    for key in ("data", "recipe", "training", "preprocessing", "tta_note", "terms"):
        if key in card:
            value = card[key]
            lines.append(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")
    for split, figures in (card.get("results") or {}).items():
        per = ", ".join(f"{c} {v:.3f}" for c, v in (figures.get("per_class_f1") or {}).items())
        lines.append(f"  {split}: accuracy {figures.get('accuracy', float('nan')):.4f}, macro-F1 "
                     f"{figures.get('macro_f1', float('nan')):.4f}" + (f" (F1: {per})" if per else ""))
    return "\n".join(lines)


def ship(checkpoint: str | Path, name: str, card: dict[str, Any], models_dir: Path = MODELS_DIR,
         face: str | None = None) -> Path:
    """Write ``checkpoint`` as the shipped model ``name``: float16 weights, no resume state, with ``card``.

    ``face`` replaces the stored face mode, the one `predict` uses unless told otherwise: a model
    trained on pre-cropped faces (``aligned``) is shipped with ``auto`` so that it finds the faces
    of the photos users bring (the blocks are cut the same way, from the landmarks, either way).
    """
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from training.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    ck = load_checkpoint(checkpoint)
    preprocessing = {**ck["preprocessing"], **({"face": face} if face else {})}
    json.dumps(card, allow_nan=False)  # a card must be plain, finite JSON
    state = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
    # what each teacher was, by its bytes, so that a final fit can be matched to its twin; not where
    # it lay on the machine that trained it
    teachers = [{k: t[k] for k in TEACHER_FIELDS if k in t} for t in ck.get("teachers") or []]
    out = make_checkpoint(arch=ck["arch"], model_kwargs=ck["model_kwargs"], class_names=ck["class_names"],
                          regions=ck["regions"], block_sizes=ck["block_sizes"], preprocessing=preprocessing,
                          normalization=ck["normalization"], config=ck["config"], model_state=state,
                          epoch=ck["epoch"], card=card, **({"teachers": teachers} if teachers else {}))
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pt"
    save_checkpoint(out, path)

    copy = {"weights_sha256": sha256_file(path), "parameters": parameter_count(out),
            "geometry": checkpoint_geometry(out), "card": card}
    atomic_write_text(card_path(name, models_dir), json.dumps(copy, indent=1, allow_nan=False) + "\n")
    return path
