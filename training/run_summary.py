"""What `faceblocks train` says of a finished run, and the split to evaluate it on next."""

from __future__ import annotations

from typing import Any

from prepro.errors import FaceblocksError
from prepro.manifest import Manifest
from prepro.words import counted
from training.run_records import best_text, stop_text


def train_report(result: Any, shards_dir: str, run_dir: str, val_split: str) -> list[str]:
    """The best epoch of ``result`` (a `training.train.TrainResult`), why it stopped, and the
    command that reports it."""
    lines = [f"{best_text(result.best_val_macro_f1, result.best_epoch)} "
             f"({counted(result.epochs_done, 'epoch', 'epochs')}, {stop_text(result.stop_reason)}); "
             f"checkpoints in {run_dir}"]
    split = report_split(shards_dir, val_split)
    if split:
        lines.append(f"next: faceblocks evaluate {run_dir} {shards_dir} --split {split}")
    return lines


def report_split(shards_dir: str, val_split: str) -> str | None:
    """The split to report a run on: test if it has samples, else val when val did not choose the epoch."""
    try:
        counts = {s: sum(r.n_samples for r in Manifest.load(shards_dir).shards_of(s)) for s in ("test", "val")}
    except FaceblocksError:
        return None
    if counts["test"] and val_split != "test":
        return "test"
    return "val" if counts["val"] and val_split != "val" else None
