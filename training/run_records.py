"""The records a training run writes, and their checks: the log rows (log.csv, a checkpoint's
history, result.json's last row) and the result (result.json).

A leaf of `training`: the checkpoint format checks a history with it, the run folder a result.
"""

from __future__ import annotations

import json
import math

LOG_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc", "val_macro_f1",
              "seconds", "partial")
VAL_FIELDS = ("val_loss", "val_acc", "val_macro_f1")  # absent from the rows of a run without validation
RESULT_KEYS = {"run_dir", "epochs_done", "best_epoch", "best_val_macro_f1", "stop_reason", "last"}


STOP_REASONS = ("epochs", "early stopping", "time budget")


def _is_finite_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _log_row_ok(row: object, epoch: int) -> bool:
    """Every log field a finite number, the validation fields all present or (no validation) all absent."""
    if not isinstance(row, dict):
        return False
    fields = LOG_FIELDS if any(k in row for k in VAL_FIELDS) else tuple(k for k in LOG_FIELDS if k not in VAL_FIELDS)
    return set(fields) <= set(row) and row["epoch"] == epoch and all(_is_finite_number(row[k]) for k in fields)


def history_ok(history: object, epochs: int) -> bool:
    """True when ``history`` holds one log row per epoch done, in order, every value a finite
    number (what a resumed run continues, log.csv and curves.png are written from)."""
    return (isinstance(history, list) and len(history) == epochs
            and all(_log_row_ok(r, i + 1) for i, r in enumerate(history)))


def result_problem(result: object) -> str | None:
    """What is wrong with a result.json record (None when nothing): its keys, their types, a
    number that is not finite, counts that disagree."""
    if not isinstance(result, dict) or not RESULT_KEYS <= set(result) <= RESULT_KEYS | {"init"}:
        return f"not a table of {', '.join(sorted(RESULT_KEYS))} (and init for a fine-tuned run)"
    if "init" in result and not (result["init"] is None or isinstance(result["init"], dict)):
        return "bad init"
    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    done = result["epochs_done"] if count(result["epochs_done"]) else -1
    checks = {"run_dir": isinstance(result["run_dir"], str), "epochs_done": done >= 0,
              "best_epoch": count(result["best_epoch"]) and result["best_epoch"] <= done,
              # None: a run without validation (val_split none)
              "best_val_macro_f1": result["best_val_macro_f1"] is None
              or (_is_finite_number(result["best_val_macro_f1"]) and -1 <= result["best_val_macro_f1"] <= 1),
              "stop_reason": isinstance(result["stop_reason"], str) and result["stop_reason"] in STOP_REASONS,
              "last": result["last"] == {} or _log_row_ok(result["last"], done)}
    bad = [k for k, ok in checks.items() if not ok]
    return f"bad {', '.join(bad)}" if bad else None


def best_text(best_val_macro_f1: float | None, best_epoch: int, digits: int = 4) -> str:
    """The epoch a run keeps, for people: its validation macro-F1, or that it kept its last epoch."""
    if best_val_macro_f1 is None:
        return f"no validation: the last epoch ({best_epoch}) is kept"
    return f"best validation macro-F1 {best_val_macro_f1:.{digits}f} at epoch {best_epoch}"


def stop_text(reason: str) -> str:
    """Why a run ended, for people: "all epochs done", "early stopping", "time budget"."""
    return {"epochs": "all epochs done"}.get(reason, reason)


def finite_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity (ValueError): no record of faceblocks' holds them."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not a finite number")

    return json.loads(text, parse_constant=refuse)
