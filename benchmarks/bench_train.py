"""Training speed and accuracy per CPU-minute on FER2013.

``throughput`` times the real training step (uint8 -> float, batch augmentation, forward,
backward, AdamW) on in-memory random blocks of the given sizes: compute only, no reading:

    python benchmarks/bench_train.py throughput --threads 2 --batch-size 64 --steps 30 \\
        --models two-branch face-cnn --sizes 32x96,32x64,64x64 16x48,16x32,48x48

``sweep`` trains every run of a sweep file (TOML: a ``[defaults]`` table of `TrainConfig` fields
and one ``[[run]]`` table per run, each naming its ``shards`` folder) into OUT/<name>, selecting
the epoch on the holdout carved from Training, then evaluates PublicTest (the shards' ``val``
split) and writes OUT/<name>/result.json. Finished runs are skipped, stopped ones resumed; a run's
``teachers`` may name earlier runs of the same file (distillation, `training.teachers`):

    python benchmarks/bench_train.py sweep benchmarks/sweep-cpu.toml bench-out/sweep

``table`` prints the Markdown table of finished runs (the Pareto view: PublicTest accuracy and
macro-F1 against training minutes), with mean and spread over the seeds of runs that differ only
in their seed:

    python benchmarks/bench_train.py table bench-out/sweep/*

Training minutes are each run's own epoch times (log.csv) summed; BENCHMARKS.md says whether the
machine was otherwise idle while they were measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from architectures import count_params, create_model  # noqa: E402
from training.chain import markdown_table  # noqa: E402
from training.checkpoint import build_model_from_checkpoint, load_checkpoint  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import augment, normalize, to_float  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from training.run_folder import RunFolder  # noqa: E402
from training.train import train  # noqa: E402


def _sizes(text: str) -> dict[str, tuple[int, int]]:
    e, m, f = (tuple(int(v) for v in s.split("x")) for s in text.split(","))
    return {"eyes": e, "mouth": m, "face": f}


def throughput(models: list[str], sizes: list[str], batch_size: int, steps: int, warmup: int, threads: int,
               channels_last: bool, model_kwargs: dict) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for name in models:
        for size_text in sizes:
            shape = _sizes(size_text)
            torch.manual_seed(0)
            model = create_model(name, 7, **model_kwargs).train().to(memory_format=fmt)
            regions = model.regions
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            g = torch.Generator().manual_seed(0)
            batch = {r: torch.randint(0, 256, (batch_size, 1, *shape[r]), dtype=torch.uint8) for r in regions}
            y = torch.randint(0, 7, (batch_size,))
            times, data_times = [], []
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                x = normalize(augment(to_float(batch, regions, torch.device("cpu"), fmt), regions, g), regions)
                t1 = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(x).logits, y, label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
                    data_times.append(t1 - t0)
            med = statistics.median(times)
            flops = _step_flops(model, x, y)
            results.append({"model": name, "sizes": size_text, "params": count_params(model), "threads": threads,
                            "batch_size": batch_size, "channels_last": channels_last,
                            "samples_per_s": round(batch_size / med, 1), "ms_per_step_median": round(1000 * med, 1),
                            "data_share": round(statistics.median(data_times) / med, 3),
                            "mflop_per_sample": round(flops / batch_size / 1e6, 1),
                            "gflop_per_s": round(flops / med / 1e9, 1)})
            print(json.dumps(results[-1]), flush=True)
    return results


def _step_flops(model, x: dict, y) -> float:
    """FLOPs of one forward and backward pass on ``x`` (torch's counter; the optimizer step and the
    data path are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_gflops(threads: int) -> float:
    """What this CPU reaches on a large float32 matrix multiply with ``threads`` threads: the
    yardstick for the share of peak a training step reaches."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------------------------
# Sweep


def load_sweep(path: Path, overrides: dict | None = None) -> list[dict]:
    """The runs of a sweep file, each with its defaults filled in, then ``overrides`` (for every
    run), and paths made absolute."""
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults = spec.get("defaults", {})
    runs = []
    for r in spec.get("run", []):
        run = {**defaults, **r, **(overrides or {})}
        run["shards"] = str((path.parent / run["shards"]).resolve()) if not Path(run["shards"]).is_absolute() \
            else run["shards"]
        runs.append(run)
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: run names must be unique")
    return runs


def teachers_in(run: dict, out: Path, names: set[str]) -> dict:
    """``run`` with each teacher that names a run of the same sweep pointing at its folder in
    ``out`` (a sweep trains its teachers before the student that learns from them)."""
    if not run.get("teachers"):
        return run
    return {**run, "teachers": [str(out / t) if t in names else t for t in run["teachers"]]}


def run_one(run: dict, out: Path) -> dict:
    folder = out / run["name"]
    rf = RunFolder(folder)
    if rf.finished() and (folder / "publictest.json").is_file():
        return json.loads((folder / "publictest.json").read_text())
    cfg = TrainConfig.from_dict({k: v for k, v in run.items() if k not in ("name", "shards")})
    t0 = time.monotonic()
    if rf.finished():  # trained, not yet evaluated (e.g. by `faceblocks train` into this folder)
        result = json.loads(rf.result.read_text())
    else:
        resume = rf.can_resume()
        result = train(run["shards"], folder, None if resume else cfg, resume=resume, overwrite=not resume,
                       log=print).__dict__
    wall = time.monotonic() - t0
    val = evaluate(folder, run["shards"], split="val", out_dir=folder / "eval-publictest")
    flip = evaluate(folder, run["shards"], split="val", tta_flip=True, out_dir=folder / "eval-publictest-flip")
    # a run without validation (val_split none) trained on the holdout's faces: it has no holdout figures
    has_holdout = cfg.val_split == "holdout"
    holdout = {f"holdout_accuracy{'_flip' if t else ''}": round(holdout_accuracy(folder, run["shards"], t), 4)
               if has_holdout else None for t in (False, True)}
    report = {"name": run["name"], "model": cfg.model, "shards": run["shards"], "config": cfg.to_dict(),
              "epochs_done": result["epochs_done"], "best_epoch": result["best_epoch"],
              "holdout_macro_f1": round(result["best_val_macro_f1"], 4) if has_holdout else None, **holdout,
              "train_minutes": round(_log_minutes(folder), 2),
              "wall_minutes_this_call": round(wall / 60, 2), "publictest_accuracy": round(val["accuracy"], 4),
              "publictest_macro_f1": round(val["macro_f1"], 4),
              "publictest_accuracy_flip": round(flip["accuracy"], 4), "publictest_macro_f1_flip": round(flip["macro_f1"], 4),
              "per_class_f1": {c: round(m["f1"], 3) for c, m in val["per_class"].items()},
              "per_class_f1_flip": {c: round(m["f1"], 3) for c, m in flip["per_class"].items()},
              "region_weights": val["region_weights_mean"]}
    (folder / "publictest.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    return report


def holdout_accuracy(folder: Path, shards: str, tta_flip: bool) -> float:
    """Accuracy of the run's best.pt on the holdout its training carved from the train split (the
    split that chose the epoch): whether flip test-time augmentation pays is decided here, not on
    PublicTest."""
    from score_models import view_probabilities  # benchmarks/ is on the path of its scripts

    ckpt = load_checkpoint(folder / "best.pt")
    view = (tta_flip, False)
    probs, y = view_probabilities(build_model_from_checkpoint(ckpt), ckpt, shards, ckpt["config"]["train_split"],
                                  True, choices=(view,))[view]
    return float((probs.argmax(1) == y).mean())


def _log_minutes(folder: Path) -> float:
    with open(folder / "log.csv", encoding="utf-8") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f)) / 60


def table(folders: list[Path]) -> str:
    """Markdown: one row per run, then one per group of runs that differ only in the seed."""
    reps = [json.loads((f / "publictest.json").read_text()) | {"folder": str(f)} for f in folders
            if (f / "publictest.json").is_file()]
    head = ["run", "network", "blocks (eyes, mouth, face)", "parameters", "epochs", "training minutes",
            "PublicTest accuracy", "PublicTest macro-F1"]
    rows = []
    for r in sorted(reps, key=lambda r: r["train_minutes"]):
        ckpt = load_checkpoint(Path(r["folder"]) / "best.pt")
        sizes = ", ".join("x".join(map(str, ckpt["block_sizes"][k])) for k in ("eyes", "mouth", "face")
                          if k in ckpt["block_sizes"])
        rows.append([r["name"], f"`{r['model']}`", sizes, f"{count_params(build_model_from_checkpoint(ckpt)):,}",
                     r["epochs_done"], f"{r['train_minutes']:.1f}", f"{100 * r['publictest_accuracy']:.2f}%",
                     f"{r['publictest_macro_f1']:.4f}"])
    lines = markdown_table(head, rows)
    groups: dict[str, list[dict]] = {}
    for r in reps:
        key = json.dumps({**r["config"], "seed": None, "progress": None}, sort_keys=True) + r["shards"]
        groups.setdefault(key, []).append(r)
    seeded = [g for g in groups.values() if len(g) > 1]
    if seeded:
        lines += ["", *markdown_table(["runs", "seeds", "training minutes (mean)", "PublicTest accuracy mean ± sd",
                                       "macro-F1 mean ± sd"], [_seed_row(g) for g in seeded])]
    return "\n".join(lines)


def _seed_row(group: list[dict]) -> list:
    acc = [100 * r["publictest_accuracy"] for r in group]
    f1 = [r["publictest_macro_f1"] for r in group]
    return [", ".join(r["name"] for r in group), len(group), f"{statistics.mean(r['train_minutes'] for r in group):.1f}",
            f"{statistics.mean(acc):.2f}% ± {statistics.stdev(acc):.2f}", f"{statistics.mean(f1):.4f} ± {statistics.stdev(f1):.4f}"]


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return key, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be JSON, e.g. epochs=1 or device=\"cpu\"")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="training samples/s on random in-memory blocks")
    t.add_argument("--models", nargs="+", default=["two-branch", "two-branch-face", "two-branch-concat", "face-cnn"])
    t.add_argument("--sizes", nargs="+", default=["32x96,32x64,64x64"], help="eyes,mouth,face sizes (HxW each)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--model-kwargs", type=json.loads, default={})
    t.add_argument("--json", type=Path, default=None, help="also write the results here")
    s = sub.add_parser("sweep", help="train and evaluate every run of a sweep file")
    s.add_argument("spec", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--only", nargs="+", default=None, help="run only these names")
    s.add_argument("--set", nargs="+", default=[], metavar="KEY=JSON", type=_setting,
                   help='override a field in every run, e.g. epochs=1 shards=\"out/shards\"')
    m = sub.add_parser("table", help="Markdown table of finished sweep runs")
    m.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args()
    if args.cmd == "throughput":
        res = throughput(args.models, args.sizes, args.batch_size, args.steps, args.warmup, args.threads,
                         args.channels_last, args.model_kwargs)
        peak = peak_gflops(args.threads)
        print(json.dumps({"matmul_2048_gflop_per_s": round(peak, 1),
                          "share_of_matmul_peak": {f"{r['model']} {r['sizes']}": round(r["gflop_per_s"] / peak, 2)
                                                   for r in res}}))
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    elif args.cmd == "sweep":
        runs = load_sweep(args.spec, dict(args.set))
        for run in runs:
            if args.only is None or run["name"] in args.only:
                run_one(teachers_in(run, args.out, {r["name"] for r in runs}), args.out)
    else:
        print(table(args.folders))


if __name__ == "__main__":
    main()
