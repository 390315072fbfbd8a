"""A training run's folder: the names of its files, and what may be replaced.

    RUN_DIR/last.pt      the latest epoch (weights, optimizer, history): what --resume continues
    RUN_DIR/best.pt      the epoch with the best validation macro-F1
    RUN_DIR/log.csv      one row per epoch
    RUN_DIR/curves.png   loss, accuracy and macro-F1 per epoch
    RUN_DIR/result.json  written when the run has ended; absent while it runs or after a kill

``--overwrite`` replaces a run only when every one of these files that exists is provably
faceblocks' own (a checkpoint in faceblocks' format, a log with its columns, a PNG with its tag, a
result with its keys); a file of the user's under one of these names stops the run instead.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from prepro.errors import OutputError

LAST, BEST, LOG, CURVES, RESULT = "last.pt", "best.pt", "log.csv", "curves.png", "result.json"
RUN_FILES = (LAST, BEST, LOG, CURVES, RESULT)
LOG_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc", "val_macro_f1",
              "seconds", "partial")
CURVES_SOFTWARE = "faceblocks train"  # the PNG text tag curves.png carries
RESULT_KEYS = {"run_dir", "epochs_done", "best_epoch", "best_val_macro_f1", "stop_reason", "last"}


STOP_REASONS = ("epochs", "early stopping", "time budget")


def _is_finite_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _log_row_ok(row: object, epoch: int) -> bool:
    return (isinstance(row, dict) and set(LOG_FIELDS) <= set(row) and row["epoch"] == epoch
            and all(_is_finite_number(row[k]) for k in LOG_FIELDS))


def history_ok(history: object, epochs: int) -> bool:
    """True when ``history`` holds one log row per epoch done, in order, every value a finite
    number (what a resumed run continues, log.csv and curves.png are written from)."""
    return (isinstance(history, list) and len(history) == epochs
            and all(_log_row_ok(r, i + 1) for i, r in enumerate(history)))


def result_problem(result: object) -> str | None:
    """What is wrong with a result.json record (None when nothing): its keys, their types, a
    number that is not finite, counts that disagree."""
    if not isinstance(result, dict) or set(result) != RESULT_KEYS:
        return f"not a table of {', '.join(sorted(RESULT_KEYS))}"
    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    done = result["epochs_done"] if count(result["epochs_done"]) else -1
    checks = {"run_dir": isinstance(result["run_dir"], str), "epochs_done": done >= 0,
              "best_epoch": count(result["best_epoch"]) and result["best_epoch"] <= done,
              "best_val_macro_f1": _is_finite_number(result["best_val_macro_f1"])
              and -1 <= result["best_val_macro_f1"] <= 1,
              "stop_reason": isinstance(result["stop_reason"], str) and result["stop_reason"] in STOP_REASONS,
              "last": result["last"] == {} or _log_row_ok(result["last"], done)}
    bad = [k for k, ok in checks.items() if not ok]
    return f"bad {', '.join(bad)}" if bad else None


def stop_text(reason: str) -> str:
    """Why a run ended, for people: "all epochs done", "early stopping", "time budget"."""
    return {"epochs": "all epochs done"}.get(reason, reason)


class RunFolder:
    """The files of one training run in ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def result(self) -> Path:
        return self.path / RESULT

    def holds_run(self) -> bool:
        """True when a run (finished, stopped or killed) has left its files here."""
        return self.last.exists() or (self.path / LOG).exists()

    def finished(self) -> bool:
        """True when the run ended by itself (epochs, early stopping, time budget); False while it
        runs, after a kill or an interrupt."""
        return self.result.is_file()

    def read_result(self) -> dict:
        """The run's result.json, checked (`result_problem`); a DataError when it is missing,
        unreadable, or not a record a finished run writes."""
        from prepro.errors import DataError

        try:
            result = finite_json(self.result.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {self.result} ({str(e)[:120]})") from None
        problem = result_problem(result)
        if problem:
            raise DataError(f"{self.result} is damaged or not faceblocks' ({problem})")
        return result

    def can_resume(self) -> bool:
        return self.last.is_file() and not self.finished()

    def check_new(self) -> None:
        """Raise OutputError when a new run here would replace a file: a run's (resume it or
        overwrite it) or one of the user's under a run file's name."""
        if self.holds_run():
            raise OutputError(f"{self.path} already holds a run: resume it (--resume), overwrite it (--overwrite), "
                              "or pick another folder")
        present = [n for n in RUN_FILES if (self.path / n).exists() or (self.path / n).is_symlink()]
        if present:
            raise OutputError(f"{self.path} holds {', '.join(present)}, which a new run would replace: move "
                              f"{'it' if len(present) == 1 else 'them'} away or pick another run folder "
                              "(--overwrite replaces only files faceblocks provably wrote)")

    def check_replaceable(self) -> None:
        """Raise OutputError naming the first run file that faceblocks cannot prove it wrote."""
        for name in RUN_FILES:
            p = self.path / name
            if (p.exists() or p.is_symlink()) and not _is_own(p, name):
                raise OutputError(f"{p} was not written by faceblocks train (or was changed since): --overwrite "
                                  "replaces only a run's own files; move it away or pick another run folder")


def finite_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity (ValueError): no record of faceblocks' holds them."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not a finite number")

    return json.loads(text, parse_constant=refuse)


def _is_own(p: Path, name: str) -> bool:
    if p.is_symlink() or not p.is_file():
        return False
    try:
        if name in (LAST, BEST):
            from training.checkpoint import load_checkpoint

            load_checkpoint(p)
            return True
        if name == LOG:
            with open(p, newline="", encoding="utf-8") as fh:
                return tuple(next(csv.reader(fh), [])) == LOG_FIELDS
        if name == RESULT:
            data = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(data, dict) and set(data) == RESULT_KEYS
        if name == CURVES:
            from PIL import Image

            with Image.open(p) as im:
                return im.format == "PNG" and im.info.get("Software") == CURVES_SOFTWARE
    except Exception:  # noqa: BLE001 - a file that cannot be read as ours is not ours
        return False
    return False
