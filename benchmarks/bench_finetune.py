"""Fine-tuning the shipped model against training from scratch and against the model as shipped.

A lab's journey, with FER2013's PublicTest standing in for the lab's own labelled faces: per seed,
a stratified pool of 1,000 PublicTest faces is drawn (its first 100 and 300 per class in
proportion are the smaller sets), the other PublicTest faces are held back and only reported.
Each labelled set is preprocessed like the shipped model's training shards and trained on with
`faceblocks train` (defaults; a 10% holdout of the labelled set chooses the epoch) three ways:

* ``scratch``: a fresh `two-branch` (the default learning rate),
* ``fine-tune``: ``--init fer2013`` (the fine-tuning default learning rate),
* ``head``: ``--init fer2013 --freeze-epochs -1`` (only the classifier head learns),

for the same number of optimiser steps (``--steps``, so a small set gets more epochs); ``zero-shot``
is the shipped model itself. Every model is scored on the held-back faces with flip test-time
augmentation (the shipped model's default). CPU minutes are the training process's user + system
time. The run resumes: a finished piece is not redone.

    python benchmarks/bench_finetune.py ../shared/data/fer2013 bench-out/finetune --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The shipped model's cut (its card): pre-cropped 48-px faces, near-native blocks.
CUT = ["--dataset", "fer2013", "--face", "aligned", "--eyes-size", "16x48",
       "--mouth-size", "16x32", "--face-size", "48x48"]
METHODS = {"scratch": [], "fine-tune": ["--init", "fer2013"], "head": ["--init", "fer2013", "--freeze-epochs", "-1"]}
BATCH = 64
HOLDOUT = 0.1


def faceblocks(*args: str) -> float:
    """Run one `faceblocks` command; returns its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"faceblocks {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def draw(test_dir: Path, sizes: list[int], seed: int) -> tuple[dict[int, list[Path]], list[Path]]:
    """Nested stratified labelled sets (per class in proportion, largest first) and the held-back rest."""
    rng = np.random.default_rng(seed)
    per_class = {e: sorted((test_dir / e).glob("PublicTest_*.jpg")) for e in EMOTIONS}
    for e in EMOTIONS:
        rng.shuffle(per_class[e])
    total = sum(len(v) for v in per_class.values())
    pool = max(sizes)
    take = {e: round(pool * len(per_class[e]) / total) for e in EMOTIONS}
    sets = {n: [f for e in EMOTIONS for f in per_class[e][:min(take[e], max(1, round(n * len(per_class[e]) / total)))]]
            for n in sizes}
    held = [f for e in EMOTIONS for f in per_class[e][take[e]:]]
    return sets, held


def copy_source(files: list[Path], dest: Path, prefix: str) -> None:
    """A Kaggle-layout folder of the files: ``prefix`` names the split (Training -> train, PublicTest -> val)."""
    if dest.is_dir():
        shutil.rmtree(dest)  # our own copy, rebuilt whole
    for f in files:
        target = dest / ("train" if prefix == "Training" else "test") / f.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target / f"{prefix}_{f.name.split('_', 1)[1]}")


def shards_of(files: list[Path], work: Path, name: str, prefix: str) -> Path:
    out = work / f"shards-{name}"
    if not (out / "manifest.json").is_file():
        copy_source(files, work / f"src-{name}", prefix)
        faceblocks("preprocess", str(work / f"src-{name}"), str(out), *CUT, "-j", "1", "-q", "--overwrite")
    return out


def score(model: str, held: Path, out: Path) -> dict:
    faceblocks("evaluate", model, str(held), "--split", "val", "--tta-flip", "--out", str(out))
    m = json.loads((out / "metrics.json").read_text())
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "scored": m["n_samples"]}


def epochs_for(n_train: int, steps: int) -> int:
    """Epochs that give about ``steps`` optimiser steps (batch 64, the last partial batch dropped)."""
    return max(1, math.ceil(steps / max(1, n_train // BATCH)))


def one_seed(test_dir: Path, out: Path, seed: int, sizes: list[int], steps: int, threads: int) -> list[dict]:
    work = out / f"seed{seed}"
    done = work / "results.jsonl"
    rows = [json.loads(line) for line in done.read_text().splitlines()] if done.is_file() else []
    have = {(r["n"], r["method"]) for r in rows}
    sets, held_files = draw(test_dir, sizes, seed)
    held = shards_of(held_files, work, "heldback", "PublicTest")
    todo = [(None, "zero-shot")] + [(n, m) for n in sizes for m in METHODS]
    for n, method in todo:
        if (n, method) in have:
            continue
        if method == "zero-shot":
            row = {"seed": seed, "n": None, "method": method, "cpu_minutes": 0.0,
                   **score("fer2013", held, work / "eval-zero-shot")}
        else:
            lab = shards_of(sets[n], work, f"labelled-{n}", "Training")
            n_train = len(sets[n]) - round(HOLDOUT * len(sets[n]))
            run = work / "runs" / f"{method}-{n}"
            cpu = faceblocks("train", str(lab), str(run), *METHODS[method], "--epochs", str(epochs_for(n_train, steps)),
                             "--threads", str(threads), "--seed", str(seed), "-q", "--overwrite")
            row = {"seed": seed, "n": len(sets[n]), "method": method, "cpu_minutes": round(cpu / 60, 2),
                   "epochs": epochs_for(n_train, steps), **score(str(run), held, run / "eval-heldback")}
        row["heldback"] = len(held_files)
        print(json.dumps(row), flush=True)
        with open(done, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["n"] or 0, r["method"]), []).append(r)
    lines = ["| labelled faces | method | seeds | held-back accuracy (flip) | macro-F1 | CPU minutes (training) |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for (n, method), g in sorted(groups.items()):
        acc = [100 * r["accuracy"] for r in g]
        f1 = [r["macro_f1"] for r in g]
        sd = (lambda v: f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "")
        lines.append(f"| {n or '-'} | {method} | {len(g)} | {statistics.mean(acc):.2f}%{sd(acc)} | "
                     f"{statistics.mean(f1):.3f} | {statistics.mean(r['cpu_minutes'] for r in g):.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fer2013", type=Path, help="FER2013 in Kaggle's folder layout (its test/ folder is used)")
    p.add_argument("out", type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=400, help="optimiser steps of every training run")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        rows += one_seed(a.fer2013 / "test", a.out, seed, sorted(a.sizes), a.steps, a.threads)
    print(table(rows))


if __name__ == "__main__":
    main()
