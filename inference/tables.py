"""The table `predict --csv` writes: one row per face (or per image without one), replacing a
regular file only when every row is in.
"""

from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path

from inference.predictions import ImagePrediction
from prepro.errors import OutputError
from prepro.inputs import printable
from prepro.outputs import new_writer_id, temp_name


CSV_HEADER = ("path", "frame", "time", "face", "track", "left", "top", "right", "bottom", "box_method", "quality",
              "label")


def table_columns(class_names: list[str], regions: list[str], smoothed: bool = False) -> list[str]:
    """The columns of the predictions table: `CSV_HEADER`, one per class probability (``p_<class>``)
    and region weight (``w_<region>``), the frame's own probabilities (``raw_p_<class>``) when they
    are smoothed, and the reason an image has no face (``error``)."""
    raw = [f"raw_p_{c}" for c in class_names] if smoothed else []
    return [*CSV_HEADER, *(f"p_{c}" for c in class_names), *(f"w_{r}" for r in regions), *raw, "error"]


def table_rows(pred: ImagePrediction, columns: list[str]) -> list[list]:
    """``pred`` as rows of `table_columns`: one per face (numbered from 1), or one (face 0) with
    the reason when it has none."""
    where = [printable(pred.path), pred.frame, pred.time]
    smoothed = any(c.startswith("raw_p_") for c in columns)
    if not pred.faces:
        return [where + [0] + [""] * (len(columns) - 5) + [pred.error or ""]]
    rows = []
    for k, f in enumerate(pred.faces):
        raw = list((f.raw_probabilities or f.probabilities).values()) if smoothed else []
        rows.append(where + [k + 1, "" if f.track is None else f.track, *f.box, f.box_method, f.quality, f.label,
                             *f.probabilities.values(), *f.region_weights.values(), *raw, ""])
    return rows


@contextmanager
def prediction_csv(path: str | None, class_names: list[str], regions: list[str], smoothed: bool = False):
    """A sink writing the `table_rows` of each prediction under the `table_columns` header. A
    regular file is written under a temporary name and takes its place when every row is in; ``-``
    is standard output, and a pipe or a character device (or a link to one: /dev/stdout) is
    written into, never replaced. A no-op without a path."""
    if path is None:
        yield lambda _pred: None
        return
    columns = table_columns(class_names, regions, smoothed)
    with _csv_stream(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        yield lambda pred: writer.writerows(table_rows(pred, columns))


@contextmanager
def _csv_stream(path: str):
    """A text stream for ``path`` (see `prediction_csv`); a write error is an OutputError."""
    import stat
    import sys

    try:
        if path == "-":
            yield sys.stdout
            sys.stdout.flush()
            return
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            with open(path, "w", encoding="utf-8", newline="") as fh:
                yield fh
            return
        if not stat.S_ISREG(mode):
            raise OutputError(f"--csv {printable(path)} is not a regular file, a pipe or a character device: "
                              "choose a file")
        with _replaced_when_done(Path(path)) as fh:
            yield fh
    except OSError as e:
        raise OutputError(f"cannot write {printable(path)} ({e.strerror or e})") from None


@contextmanager
def _replaced_when_done(path: Path):
    """A new file under a temporary name beside ``path``, renamed to ``path`` when the block ends
    well and removed otherwise."""
    tmp = temp_name(path, new_writer_id())
    fh = open(tmp, "x", encoding="utf-8", newline="")
    try:
        yield fh
        fh.close()
        os.replace(tmp, path)
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
