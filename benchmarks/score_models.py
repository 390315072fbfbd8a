"""Score trained models one by one and averaged (every ensemble of two or more of them) on the
holdout that chose their epochs and on PublicTest (the shards' val split, only reported), for each
set of test-time views.

The models must share their holdout (same train split, fraction and holdout seed: runs of other
seeds share it with ``--holdout-seed``), so that the ensemble too is scored on faces none of its
members trained on. An ensemble's probabilities are the mean of its members' under the same views.

    python benchmarks/score_models.py fer2013 bench-out/runs/tbf-s1 --shards bench-out/fer2013-native
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHOICES = ((False, False), (True, False), (False, True), (True, True))  # (flip, shift)


def holdout_key(ckpt: dict) -> tuple:
    """What decides a run's holdout; a model that chose its epoch on no holdout has none to score
    (it trained on those faces, or on another split's)."""
    from training.config import TrainConfig

    cfg = TrainConfig.from_dict(ckpt["config"])
    if cfg.val_split != "holdout":
        sys.exit(f"a model trained with val_split {cfg.val_split} has no holdout of its own to be scored on")
    return cfg.holdout_key


def check_final_fit_of(final: dict, twin: dict) -> None:
    """Exit unless checkpoint ``final`` (val_split none) is the final fit of checkpoint ``twin``:
    the same training settings but for the holdout, which ``twin`` kept out and chose on."""
    from training.config import NO_VALIDATION, TrainConfig, differing_fields

    a, b = TrainConfig.from_dict(final["config"]), TrainConfig.from_dict(twin["config"])
    changed = set(differing_fields(a, b)) - {"val_split", "holdout_frac", "holdout_seed"}
    files = _teacher_files(final)
    if "teachers" in changed and None not in files and files == _teacher_files(twin):
        changed.discard("teachers")  # the same teachers named by other paths (the bytes decide)
    if a.val_split != NO_VALIDATION or b.val_split != "holdout" or changed:
        sys.exit("the views and figures of a final fit (val_split none) come from the run that chose them on its "
                 "holdout: the same settings but val_split holdout"
                 + (f" (they differ in {', '.join(sorted(changed))})" if changed else ""))


def _teacher_files(ckpt: dict) -> list:
    """The sha256 of each teacher a checkpoint learnt from, in order (as its training recorded them)."""
    return [t.get("sha256") for t in ckpt.get("teachers") or []]


def view_probabilities(model, ckpt: dict, shards: str, split: str, holdout: bool, choices=CHOICES) -> dict:
    """{(flip, shift): (probabilities (N, classes), labels)} on ``split`` (its holdout part)."""
    from training.batch_predictions import predict_batches
    from training.data import Batches, SplitSamples, holdout_rows

    regions, names = list(ckpt["regions"]), list(ckpt["class_names"])
    samples = SplitSamples(shards, split, class_names=names, regions=regions)
    if holdout:
        _split, frac, seed = holdout_key(ckpt)
        samples.select(holdout_rows(samples.targets, frac, seed))
    batches = Batches(samples, samples.load(torch.device("cpu")), 512)
    out = {}
    for flip, shift in choices:
        logits, _w, y = predict_batches(model, batches, regions, torch.device("cpu"), contextlib.nullcontext,
                                        torch.contiguous_format, tta_flip=flip, tta_shift=shift)
        out[(flip, shift)] = (torch.from_numpy(logits).softmax(1).numpy(), y)
    return out


def scores(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class F1 of the most probable class."""
    from sklearn.metrics import f1_score

    pred = probs.argmax(1)
    per = f1_score(y, pred, labels=list(range(len(names))), average=None, zero_division=0)
    return {"accuracy": round(float(np.mean(pred == y)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
            "per_class_f1": {c: round(float(v), 3) for c, v in zip(names, per)}}


def _row(name: str, holdout: dict, public: dict, names: list[str]) -> str:
    cells = []
    for c in CHOICES:
        h, p = scores(*holdout[c], names), scores(*public[c], names)
        cells.append(f"{100 * h['accuracy']:.2f}% / {h['macro_f1']:.4f} | {100 * p['accuracy']:.2f}% / "
                     f"{p['macro_f1']:.4f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def _mean(parts: list[dict]) -> dict:
    return {c: (np.mean([p[c][0] for p in parts], axis=0), parts[0][c][1]) for c in CHOICES}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="shipped model names, run folders or checkpoints")
    p.add_argument("--shards", required=True, help="the shards the models were trained on, val = PublicTest")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from training.checkpoint import build_model_from_checkpoint
    from training.model_names import resolve_checkpoint
    from training.tta import tta_name

    torch.set_num_threads(args.threads)
    loaded = [resolve_checkpoint(m)[1] for m in args.models]
    keys, names = {holdout_key(c) for c in loaded}, loaded[0]["class_names"]
    if len(keys) > 1 or any(c["class_names"] != names for c in loaded):
        sys.exit(f"the models do not share one holdout and one class list ({sorted(keys)}): train them with the "
                 "same --holdout-seed on the same shards")
    print("| model | " + " | ".join(f"holdout, {tta_name(*c)} | PublicTest, {tta_name(*c)}" for c in CHOICES) + " |")
    print("| --- |" + " ---: |" * (2 * len(CHOICES)))
    held, public = [], []
    for name, ckpt in zip(args.models, loaded):
        model = build_model_from_checkpoint(ckpt).eval()
        held.append(view_probabilities(model, ckpt, args.shards, holdout_key(ckpt)[0], True))
        public.append(view_probabilities(model, ckpt, args.shards, "val", False))
        print(_row(name, held[-1], public[-1], names), flush=True)
    # Every ensemble of two or more of them (4 rows for 3 models): the probabilities are already here.
    for size in range(2, len(loaded) + 1):
        for group in itertools.combinations(range(len(loaded)), size):
            print(_row("mean of " + " + ".join(args.models[i] for i in group), _mean([held[i] for i in group]),
                       _mean([public[i] for i in group]), names))


if __name__ == "__main__":
    main()
