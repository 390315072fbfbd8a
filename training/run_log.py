"""The files a run rewrites after each epoch for people to read: log.csv and curves.png, from the
whole history (so a resumed run keeps one log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prepro.outputs import atomic_write, atomic_write_text
from training.run_folder import CURVES, CURVES_SOFTWARE, LOG, RunFolder
from training.run_records import LOG_FIELDS


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite log.csv and curves.png from the whole history (so a resumed run keeps one log)."""
    import csv
    from io import BytesIO, StringIO

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    buf = StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k) for k in LOG_FIELDS})
    atomic_write_text(RunFolder(run_dir).file(LOG), buf.getvalue())
    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    ep = [r["epoch"] for r in history]
    for ax, key, title in zip(fig.subplots(1, 3), ("loss", "acc", "macro_f1"), ("loss", "accuracy", "macro-F1")):
        for split in ("train", "val") if "val_loss" in history[-1] else ("train",):
            ax.plot(ep, [r[f"{split}_{key}"] for r in history], marker="o", ms=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, format="png", dpi=100, metadata={"Software": CURVES_SOFTWARE})
    atomic_write(RunFolder(run_dir).file(CURVES), lambda f: f.write(png.getvalue()))
