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


CSV_HEADER = ("path", "frame", "time", "face", "left", "top", "right", "bottom", "box_method", "quality", "label")


@contextmanager
def prediction_csv(path: str | None, class_names: list[str], regions: list[str]):
    """A sink writing one CSV row per face (or one per image without a face, with the reason), with
    one column per class probability (``p_<class>``) and per region weight (``w_<region>``). A
    regular file is written under a temporary name and takes its place when every row is in; ``-``
    is standard output, and a pipe or a character device (or a link to one: /dev/stdout) is
    written into, never replaced. A no-op without a path."""
    if path is None:
        yield lambda _pred: None
        return
    with _csv_stream(path) as fh:
        writer = csv.writer(fh)
        extra = [f"p_{c}" for c in class_names] + [f"w_{r}" for r in regions]
        empty = [""] * (len(CSV_HEADER) - 4 + len(extra))

        def sink(pred: ImagePrediction) -> None:
            where = [printable(pred.path), pred.frame, pred.time]
            if not pred.faces:
                writer.writerow(where + [0] + empty + [pred.error or ""])
            for k, f in enumerate(pred.faces):
                writer.writerow(where + [k + 1, *f.box, f.box_method, f.quality, f.label,
                                         *f.probabilities.values(), *f.region_weights.values(), ""])

        writer.writerow([*CSV_HEADER, *extra, "error"])
        yield sink


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
    from prepro.outputs import new_writer_id, temp_name

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
