"""Evaluation: a checkpoint on one split of a shard folder (the same or another dataset).

``evaluate`` writes ``metrics.json`` (accuracy, macro-F1, per class, region attention),
``confusion.json`` and ``confusion.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from prepro.errors import InputError, MismatchError, OutputError
from prepro.outputs import atomic_write, atomic_write_text, sha256_file
from prepro.shards import Manifest
from training.batch_predictions import predict_batches
from training.checkpoint import build_model_from_checkpoint, require_finite_outputs
from training.data import Batches, SplitSamples
from training.devices import amp_context, resolve_device
from training.model_names import resolve_checkpoint
from training.run_records import finite_json
from training.shard_fit import require_cut_like_model
from training.tta import model_tta, tta_name
from training.zoo import is_in_package


def evaluate(checkpoint_or_run_dir: str | os.PathLike, shards_dir: str | os.PathLike,
             split: str | Sequence[str] = "test", tta_flip: bool | None = None, tta_shift: bool | None = None,
             out_dir: str | os.PathLike | None = None, batch_size: int = 256, device: str = "auto",
             allow_preprocessing_mismatch: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint (a run folder, a .pt file, or the name of a shipped model) on a split
    of a shard folder, several splits scored together (``"val,test"`` or a list), or ``"all"``
    (every split that has samples: a dataset the model never trained on); writes metrics.json and
    the confusion matrix to ``results_folder``.

    Shards whose blocks were cut with other margins, rotation or padding than the checkpoint's
    training shards are refused unless ``allow_preprocessing_mismatch`` (the differences are then
    recorded). Labels are matched by name: samples whose label the model does not know are
    excluded and counted. Macro-F1 averages over the classes present in the evaluated samples.
    ``tta_flip`` and ``tta_shift`` (`training.tta`) None follow the model's card.
    """
    ckpt_path, ckpt = resolve_checkpoint(checkpoint_or_run_dir)
    manifest = Manifest.load(shards_dir)
    splits = evaluation_splits(split, manifest)
    split_label = "all" if split == "all" else "+".join(splits)
    out = results_folder(out_dir, ckpt_path, shards_dir, split_label)  # a refused folder: before any work
    tta_flip, tta_shift = model_tta(ckpt, tta_flip, tta_shift)
    model = build_model_from_checkpoint(ckpt)
    class_names, regions = list(ckpt["class_names"]), list(ckpt["regions"])
    differences = require_cut_like_model(shards_dir, manifest, ckpt, ckpt_path.name, allow_preprocessing_mismatch)
    if not any(n in manifest.label_names for n in class_names):
        raise MismatchError(f"{shards_dir} has labels {', '.join(manifest.label_names)}, none of which the model "
                            f"knows ({', '.join(class_names)}): evaluate on shards with these labels")
    logits, region_w, y, counts = _predict_splits(model, shards_dir, splits, class_names, regions, batch_size,
                                                  device, (tta_flip, tta_shift), every=split == "all")
    require_finite_outputs(ckpt_path, torch.from_numpy(logits).softmax(1).numpy(), region_w)
    metrics = _metrics(logits.argmax(1), y, region_w, class_names, regions) | counts | {
        "checkpoint": str(ckpt_path), "checkpoint_sha256": sha256_file(ckpt_path), "arch": ckpt["arch"],
        "epoch": ckpt["epoch"], "shards_dir": str(shards_dir), "split": split_label, "splits": splits,
        "tta_flip": tta_flip, "tta_shift": tta_shift, "preprocessing_differences": differences}
    _write(out, metrics, ckpt["arch"], Path(shards_dir).name)
    return metrics


def evaluation_splits(split: str | Sequence[str], manifest) -> list[str]:
    """The splits ``split`` names, in the shards' order: one name, a comma list or a sequence of
    names, or ``all`` (every split that has shards)."""
    if split == "all":
        return [s for s in manifest.split_names if manifest.shards_of(s)]
    names = [x.strip() for x in split.split(",")] if isinstance(split, str) else [str(x).strip() for x in split]
    names = [x for x in names if x]
    if not names:
        raise InputError(f"no split given: name one of {', '.join(manifest.split_names)}, several (val,test), "
                         "or all")
    for name in names:
        if name not in manifest.split_names:
            raise InputError(f"unknown split {name!r}; allowed: {', '.join(manifest.split_names)}, a comma list "
                             "of them, or all")
        if names.count(name) > 1:
            raise InputError(f"split {name!r} is named twice")
    return [s for s in manifest.split_names if s in names]


def results_folder(out_dir: str | os.PathLike | None, ckpt_path: Path, shards_dir: str | os.PathLike,
                   split_label: str) -> Path:
    """Where evaluate writes: ``out_dir``; by default the checkpoint's folder (a run folder) when it
    is the user's and writable, else a folder beside the shards named after the model and split
    (``out/jaffe`` scored by ``fer2013`` on test: ``out/jaffe-eval-fer2013-test``). Never a folder
    inside the installed package: a shipped model's folder is no run folder."""
    if out_dir is not None:
        if is_in_package(out_dir):
            raise OutputError(f"--out {out_dir} is inside the installed faceblocks package: choose a folder of "
                              "your own (or leave --out out: the results go beside the shards)")
        return Path(out_dir)
    home = ckpt_path.parent
    if not is_in_package(home) and home.is_dir() and os.access(home, os.W_OK):
        return home
    shards = Path(shards_dir).resolve()
    return shards.parent / f"{shards.name}-eval-{ckpt_path.stem}-{split_label}"


def _predict_splits(model: nn.Module, shards_dir: str | os.PathLike, splits: list[str], class_names: list[str],
                    regions: list[str], batch_size: int, device: str, tta: tuple[bool, bool], every: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(logits, region weights, labels, sample counts) over ``splits`` together. Each named split
    must hold samples the model can score; with ``every`` (``all``) only one of them must."""
    parts = [SplitSamples(str(shards_dir), s, class_names=class_names, regions=regions) for s in splits]
    scored = [p for p in parts if len(p)] if every else parts
    for part in scored or parts[:1]:
        part.require_samples(f"split {part.split!r}")
    dev = resolve_device(device)
    model = model.to(dev)
    outs = [predict_batches(model, Batches(p, None, batch_size), regions, dev, amp_context(dev, True)[0],
                            torch.contiguous_format, tta_flip=tta[0], tta_shift=tta[1]) for p in scored]
    excluded: dict[str, int] = {}
    for p in parts:
        for label, n in p.excluded_by_label.items():
            excluded[label] = excluded.get(label, 0) + n
    counts = {"n_excluded": sum(p.n_excluded for p in parts), "excluded_by_label": excluded,
              "n_unlabelled": sum(p.n_unlabelled for p in parts)}
    return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]),
            np.concatenate([o[2] for o in outs]), counts)


def _metrics(pred: np.ndarray, y: np.ndarray, region_w: np.ndarray, class_names: list[str],
             regions: list[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    present = sorted(int(v) for v in np.unique(y))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=present, zero_division=0)
    cm = confusion_matrix(y, pred, labels=list(range(len(class_names))))[present]
    return {
        "n_samples": int(len(y)), "model_classes": class_names,
        "evaluated_classes": [class_names[c] for c in present],
        "accuracy": float((pred == y).mean()), "macro_f1": float(np.mean(f1)),
        "per_class": {class_names[c]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(present, prec, rec, f1, support)},
        "regions": regions,
        "region_weights_mean": dict(zip(regions, region_w.mean(0).round(6).tolist())),
        "region_weights_per_class": {class_names[c]: dict(zip(regions, region_w[y == c].mean(0).round(6).tolist()))
                                     for c in present},
        "confusion": cm.tolist(),
    }


def read_metrics(path: str | os.PathLike) -> dict[str, Any] | None:
    """A metrics.json that `evaluate` wrote, checked (`metrics_problem`); None when it is missing,
    unreadable or not such a record, so that a caller evaluates again instead of trusting it."""
    try:
        metrics = finite_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return None if metrics_problem(metrics) else metrics


def metrics_problem(m: Any) -> str | None:
    """What is wrong with a metrics record (None when nothing): the fields a report or a rerun
    reads, with their types and ranges (non-finite numbers are refused when it is parsed)."""
    def num(v: Any, low: float = 0.0, high: float = 1.0) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def table(v: Any, ok: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and ok(x) for k, x in v.items())

    if not isinstance(m, dict):
        return "not a table"
    regions = m.get("regions")
    per_region = lambda v: table(v, num) and set(v) == set(regions)  # noqa: E731
    checks = {
        "regions": isinstance(regions, list) and all(isinstance(r, str) for r in regions),
        "accuracy": num(m.get("accuracy")), "macro_f1": num(m.get("macro_f1")), "n_samples": count(m.get("n_samples")),
        "split": isinstance(m.get("split"), str), "tta_flip": isinstance(m.get("tta_flip"), bool),
        "tta_shift": isinstance(m.get("tta_shift", False), bool),  # metrics from before shifts lack it
        "checkpoint_sha256": isinstance(m.get("checkpoint_sha256"), str),
        "per_class": table(m.get("per_class"), lambda pc: isinstance(pc, dict) and count(pc.get("support"))
                           and all(num(pc.get(k)) for k in ("precision", "recall", "f1"))),
    }
    if checks["regions"]:
        checks["region_weights_mean"] = per_region(m.get("region_weights_mean"))
        checks["region_weights_per_class"] = table(m.get("region_weights_per_class"), per_region)
    bad = [k for k, ok in checks.items() if not ok]
    return f"bad {', '.join(bad)}" if bad else None


def _write(out: Path, metrics: dict[str, Any], arch: str, shards_name: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {out} ({e.strerror or e})") from None
    cm = np.asarray(metrics.pop("confusion"))
    confusion = {"true_labels": metrics["evaluated_classes"], "pred_labels": metrics["model_classes"],
                 "matrix": cm.tolist()}
    atomic_write_text(out / "confusion.json", json.dumps(confusion, indent=1))
    plot_confusion(cm, metrics["evaluated_classes"], metrics["model_classes"], out / "confusion.png",
                   title=f"{arch} on {shards_name}/{metrics['split']}")
    metrics["files"] = {k: str(out / k) for k in ("metrics.json", "confusion.json", "confusion.png")}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, allow_nan=False))


def plot_confusion(cm: np.ndarray, true_names: list[str], pred_names: list[str], path: Path, title: str) -> None:
    from io import BytesIO

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)  # row-normalised: recall on the diagonal
    fig = Figure(figsize=(1.0 + 0.8 * len(pred_names), 1.0 + 0.7 * len(true_names)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_names)), pred_names, rotation=45, ha="right")
    ax.set_yticks(range(len(true_names)), true_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write(path, lambda f: f.write(png.getvalue()))


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A plain-text summary of ``evaluate``'s metrics for the terminal."""
    lines = [f"{metrics['arch']} (epoch {metrics['epoch']}) on {metrics['shards_dir']} [{metrics['split']}]"
             f"{tta_words(metrics)}: {metrics['n_samples']} samples"]
    if metrics["n_excluded"]:
        per = ", ".join(f"{k} {v}" for k, v in metrics["excluded_by_label"].items())
        lines.append(f"excluded {metrics['n_excluded']} samples with labels the model does not know ({per})")
    if metrics["n_unlabelled"]:
        lines.append(f"skipped {metrics['n_unlabelled']} unlabelled samples")
    if metrics.get("preprocessing_differences"):
        lines.append("warning: blocks cut differently from training: " + "; ".join(metrics["preprocessing_differences"]))
    regions = metrics["regions"]
    head = f"{'class':<12}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}  " + " ".join(f"{r:>6}" for r in regions)
    lines += ["", head, "-" * len(head)]
    for name, m in metrics["per_class"].items():
        w = metrics["region_weights_per_class"].get(name, {})
        lines.append(f"{name:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9d}  "
                     + " ".join(f"{w.get(r, float('nan')):>6.3f}" for r in regions))
    lines.append("-" * len(head))
    lines.append(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   mean region weights "
                 + ", ".join(f"{r} {v:.3f}" for r, v in metrics["region_weights_mean"].items()))
    return "\n".join(lines)


def tta_words(metrics: dict[str, Any]) -> str:
    """' with flip TTA' (or 'flip+shift'), or nothing, for a line about ``metrics``."""
    name = tta_name(bool(metrics.get("tta_flip")), bool(metrics.get("tta_shift")))
    return "" if name == "none" else f" with {name} TTA"
