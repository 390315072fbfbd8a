"""Training throughput per network on CPU, and an accuracy run on FER2013 shards.

Throughput times the real training step (uint8 -> float, batch augmentation, forward, backward,
AdamW step) on in-memory random blocks of the default sizes, so it measures compute, not reading:

    python benchmarks/bench_train.py throughput --threads 2 --batch-size 64 --steps 20

The accuracy run trains on the FER2013 shards' train split (Training), selects the epoch by
macro-F1 on val (PublicTest), and reports val (and optionally test = PrivateTest) accuracy and
macro-F1; it takes hours on a 2-core CPU for 30 epochs, minutes per epoch on a GPU:

    faceblocks preprocess path/to/fer2013 out/fer2013 --dataset fer2013 --face aligned
    python benchmarks/bench_train.py accuracy out/fer2013 runs/fer-two-branch --model two-branch --epochs 30
    python benchmarks/bench_train.py accuracy out/fer2013 runs/fer-30min --max-minutes 30 --test
    python benchmarks/bench_train.py summary runs/fer-two-branch runs/fer-30min     # Markdown table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SIZES = {"eyes": (32, 96), "mouth": (32, 64), "face": (64, 64)}


def throughput(models: list[str], batch_size: int, steps: int, warmup: int, threads: int, augment: bool) -> list[dict]:
    import torch

    from architectures import count_params, create_model
    from training.data import augment as augment_batch
    from training.data import normalize, to_float

    torch.set_num_threads(threads)
    results = []
    for name in models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=7).train()
        regions = model.regions
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        batch = {r: torch.randint(0, 256, (batch_size, 1, *DEFAULT_SIZES[r]), dtype=torch.uint8) for r in regions}
        y = torch.randint(0, 7, (batch_size,))
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            x = to_float(batch, regions, torch.device("cpu"))
            if augment:
                x = augment_batch(x, regions, g)
            out = model(normalize(x, regions))
            loss = torch.nn.functional.cross_entropy(out.logits, y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        total = sum(times)
        results.append({"model": name, "params": count_params(model), "batch_size": batch_size, "threads": threads,
                        "augment": augment, "samples_per_s": round(steps * batch_size / total, 1),
                        "ms_per_step": round(1000 * total / steps, 1)})
        print(json.dumps(results[-1]), flush=True)
    return results


def accuracy(args: argparse.Namespace) -> dict:
    from training import TrainConfig, evaluate, train

    cfg = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      max_minutes=args.max_minutes, patience=args.patience, seed=args.seed,
                      class_weighting=args.class_weighting, num_workers=args.num_workers,
                      labels=args.labels, progress=not args.no_progress)
    t0 = time.monotonic()
    result = train(args.shards_dir, args.run_dir, cfg, resume=args.resume, overwrite=args.overwrite)
    minutes = (time.monotonic() - t0) / 60
    report = {"model": args.model, "train_minutes": round(minutes, 1), "epochs_done": result.epochs_done,
              "best_epoch": result.best_epoch, "stop_reason": result.stop_reason}
    run = Path(args.run_dir)
    val = evaluate(run, args.shards_dir, split="val", out_dir=run / "eval-val", tta_flip=args.tta)
    report.update(val_accuracy=round(val["accuracy"], 4), val_macro_f1=round(val["macro_f1"], 4))
    if args.test:
        test = evaluate(run, args.shards_dir, split="test", out_dir=run / "eval-test", tta_flip=args.tta)
        report.update(test_accuracy=round(test["accuracy"], 4), test_macro_f1=round(test["macro_f1"], 4))
    (run / "accuracy.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return report


def summary(run_dirs: list[Path]) -> str:
    """A Markdown table of finished accuracy runs (reads accuracy.json, best.pt and eval-val/metrics.json)."""
    from architectures import count_params
    from training.chain import markdown_table
    from training.checkpoint import build_model_from_checkpoint, load_checkpoint

    head = ["run", "network", "parameters", "epochs", "training time", "best epoch", "val accuracy",
            "val macro-F1", "mean region weights (val)"]
    rows = []
    for run in run_dirs:
        rep = json.loads((run / "accuracy.json").read_text())
        ckpt = load_checkpoint(run / "best.pt")
        val = json.loads((run / "eval-val" / "metrics.json").read_text())
        weights = ", ".join(f"{r} {w:.2f}" for r, w in val["region_weights_mean"].items())
        rows.append([run.name, f"`{rep['model']}`", f"{count_params(build_model_from_checkpoint(ckpt)):,}",
                     f"{rep['epochs_done']} ({rep['stop_reason']})", f"{rep['train_minutes']:.1f} min",
                     rep["best_epoch"], f"{100 * rep['val_accuracy']:.2f}%", f"{rep['val_macro_f1']:.4f}", weights])
    return "\n".join(markdown_table(head, rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="training samples/s per model on random in-memory blocks")
    t.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = sub.add_parser("accuracy", help="train on FER2013 train, select on val, report val accuracy and macro-F1")
    a.add_argument("shards_dir")
    a.add_argument("run_dir")
    a.add_argument("--model", default="two-branch")
    a.add_argument("--epochs", type=int, default=30)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--lr", type=float, default=2e-3)
    a.add_argument("--max-minutes", type=float, default=0.0)
    a.add_argument("--patience", type=int, default=0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--class-weighting", default="none", choices=["none", "inverse", "sqrt"])
    a.add_argument("--num-workers", type=int, default=0)
    a.add_argument("--labels", nargs="+", default=None)
    a.add_argument("--tta", action="store_true", help="evaluate with horizontal-flip test-time augmentation")
    a.add_argument("--test", action="store_true", help="also report the test split (FER2013 PrivateTest)")
    a.add_argument("--resume", action="store_true")
    a.add_argument("--overwrite", action="store_true")
    a.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("summary", help="a Markdown table of finished accuracy runs")
    m.add_argument("run_dirs", nargs="+", type=Path)
    args = p.parse_args()
    if args.cmd == "summary":
        print(summary(args.run_dirs))
    elif args.cmd == "throughput":
        from architectures import list_models

        res = throughput(args.models or list_models(), args.batch_size, args.steps, args.warmup, args.threads,
                         not args.no_augment)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    else:
        accuracy(args)


if __name__ == "__main__":
    main()
