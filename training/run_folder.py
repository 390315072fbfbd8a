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
from pathlib import Path

from prepro.errors import DataError, OutputError
from training.run_records import LOG_FIELDS, finite_json, result_problem

LAST, BEST, LOG, CURVES, RESULT = "last.pt", "best.pt", "log.csv", "curves.png", "result.json"
RUN_FILES = (LAST, BEST, LOG, CURVES, RESULT)
CURVES_SOFTWARE = "faceblocks train"  # the PNG text tag curves.png carries


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


def _is_own(p: Path, name: str) -> bool:
    if p.is_symlink() or not p.is_file():
        return False
    try:
        if name in (LAST, BEST):
            # imported here: torch loads on first use, not when this module is imported
            from training.checkpoint import load_checkpoint

            load_checkpoint(p)
            return True
        if name == LOG:
            with open(p, newline="", encoding="utf-8") as fh:
                return tuple(next(csv.reader(fh), [])) == LOG_FIELDS
        if name == RESULT:
            data = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(data, dict) and result_problem(data) is None
        if name == CURVES:
            from PIL import Image

            with Image.open(p) as im:
                return im.format == "PNG" and im.info.get("Software") == CURVES_SOFTWARE
    except Exception:  # noqa: BLE001 - a file that cannot be read as ours is not ours
        return False
    return False
