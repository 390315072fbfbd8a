"""Prediction speed: batched, parallel `predict` against the one-at-a-time loop.

The **one-at-a-time loop** is what `faceblocks predict` did before batching: one process finds
the faces of an image, the network classifies that image's faces, then the next image
(`PredictOptions(jobs=1, batch_size=1)`). **faceblocks** is `predict` as shipped: faces found in
``--jobs`` worker processes, classified ``--batch-size`` faces per forward pass. Both run the same
shipped model on the same inputs, one `predict` call each, model loading included; images/s is the
median of ``--repeats`` runs, and the ratio is taken within each repeat.

    python benchmarks/bench_predict.py photos ../shared/data/photos --repeats 3
    python benchmarks/bench_predict.py fer ../shared/data/fer2013 --images 600 --repeats 3
    python benchmarks/bench_predict.py fer ../shared/data/fer2013 --model benchmarks/teachers/full-two-branch-100ep.pt

``photos``: the 12 real photographs (group scenes, 43+ faces; `--face auto`). ``fer``: FER2013
PublicTest crops (one face each; `--face aligned`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inference.predict import PredictOptions, predict  # noqa: E402


# --tta: the views the network averages (`training.tta`); "card" = the shipped model's default.
TTA = {"card": {}, "flip": {"tta_flip": True, "tta_shift": False}, "none": {"tta_flip": False, "tta_shift": False}}


def timed(inputs: list[str], face: str, jobs: int, batch_size: int, tta: str = "card",
          model: str = "fer2013") -> tuple[float, int]:
    """(seconds, faces) for one `predict` of ``model`` over ``inputs``."""
    t0 = time.perf_counter()
    faces = sum(len(r.faces) for r in predict(model, inputs, PredictOptions(
        overrides={"face": face}, jobs=jobs, batch_size=batch_size, device="cpu", **TTA[tta])))
    return time.perf_counter() - t0, faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=["photos", "fer"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--images", type=int, default=600, help="fer: how many PublicTest faces (evenly spaced)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tta", choices=sorted(TTA), default="card",
                    help="test-time views: the model card's (flip + shifts for fer2013), the flip only, or none")
    ap.add_argument("--model", default="fer2013",
                    help="a shipped model's name or a checkpoint (e.g. a model shipped before, to compare on one machine)")
    args = ap.parse_args()
    if args.case == "photos":
        inputs, face = sorted(str(p) for p in args.folder.glob("*.jpg")), "auto"
    else:
        files = sorted(args.folder.glob("test/*/PublicTest_*.jpg"))
        inputs, face = [str(p) for p in files[:: max(1, len(files) // args.images)][:args.images]], "aligned"
    rows = {"one at a time (1 process, batch 1)": [], f"faceblocks ({args.jobs} jobs, batch {args.batch_size})": []}
    faces = 0
    for _ in range(args.repeats):
        ref, faces = timed(inputs, face, 1, 1, args.tta, args.model)
        new, _ = timed(inputs, face, args.jobs, args.batch_size, args.tta, args.model)
        for (name, times), t in zip(rows.items(), (ref, new)):
            times.append((t, ref / t))
    print(f"{args.model}: {len(inputs)} images, {faces} faces, --face {face}, --tta {args.tta}, "
          f"median of {args.repeats}\n")
    print("| | images/s | x one at a time |\n|---|---|---|")
    for name, times in rows.items():
        t = statistics.median(s for s, _ in times)
        print(f"| {name} | {len(inputs) / t:.1f} | {statistics.median(r for _, r in times):.2f} |")


if __name__ == "__main__":
    main()
