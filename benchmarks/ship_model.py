"""Write a finished sweep run as a shipped model (training/models/NAME.pt) with its model card.

The card is made from what the run recorded: its config, the preprocessing stored in the
checkpoint, the epoch times of log.csv and the PublicTest figures of publictest.json (written by
`bench_train.py sweep`). The figures are never typed in by hand:

    python benchmarks/ship_model.py bench-out/student/kd3-two-branch-face-100ep-s1 fer2013 \\
        --machine "2 CPU cores (AMD EPYC), 2 torch threads" --recipe benchmarks/fer2013-student.sh

A final fit (`train --val-split none`: the whole train split, the last epoch kept) has no holdout of
its own: ``--holdout-run RUN`` names the run with the same settings that chose them on the holdout,
and the card states that run's holdout figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from prepro.outputs import sha256_file  # noqa: E402
from score_models import check_final_fit_of  # noqa: E402  (benchmarks/ is on the path)
from training.checkpoint import load_checkpoint  # noqa: E402
from training.zoo import MODELS_DIR, ship  # noqa: E402

TERMS = ("Research use only. The weights were trained on FER2013, whose terms allow research use only; "
         "the blocks are cut with dlib's 68-point landmark model, trained on iBUG 300-W, whose licence "
         "excludes commercial use. faceblocks' own code is MIT.")


def card_for(run: Path, machine: str, recipe: str, holdout_run: Path | None = None) -> dict:
    """The model card of the sweep run in ``run``, from its own records (a final fit's holdout
    figures from ``holdout_run``'s). Flip test-time augmentation is the model's default when it
    raised the accuracy on the holdout that chose the epoch (never decided on PublicTest)."""
    report = json.loads((run / "publictest.json").read_text(encoding="utf-8"))
    ckpt = load_checkpoint(run / "best.pt")
    held = _holdout_report(report, ckpt, holdout_run)
    cfg, pre = {**ckpt["config"], "teachers": _teacher_names(ckpt)}, ckpt["preprocessing"]
    tta = held["holdout_accuracy_flip"] > held["holdout_accuracy"]
    plain = {"accuracy": report["publictest_accuracy"], "macro_f1": report["publictest_macro_f1"],
             "per_class_f1": report["per_class_f1"]}
    flip = {"accuracy": report["publictest_accuracy_flip"], "macro_f1": report["publictest_macro_f1_flip"],
            "per_class_f1": report["per_class_f1_flip"]}
    # "publictest" holds the figures of the model's default (with or without the flip).
    results = {"publictest": flip if tta else plain, "publictest_no_flip" if tta else "publictest_flip":
               plain if tta else flip}
    sizes = ", ".join(f"{r} {'x'.join(map(str, ckpt['block_sizes'][r]))}" for r in ckpt["regions"])
    return {
        "title": f"{ckpt['arch']} on FER2013 ({len(ckpt['class_names'])} expressions)",
        "data": _data_text(holdout_run),
        "recipe": (f"{ckpt['arch']}, {report['epochs_done']} epochs ({_epoch_text(report, held, holdout_run)}), "
                   f"batch {cfg['batch_size']}, AdamW lr {cfg['lr']} with cosine schedule, weight decay "
                   f"{cfg['weight_decay']}, label smoothing {cfg['label_smoothing']}, augmentation "
                   f"{'on' if cfg['augment'] else 'off'}{_options(cfg)}, seed {cfg['seed']}; reproduce with "
                   f"`{recipe}`"),
        "training": f"{report['train_minutes']:.1f} minutes on {machine}",
        "preprocessing": f"trained on face={pre.get('face')} crops, blocks {sizes} (grey, eyes level); "
                         "shipped with face=auto: `faceblocks predict` finds the faces in any photo "
                         "(--face aligned for pre-cropped faces) and cuts the same blocks",
        "results": results,
        "tta_flip": tta,
        "tta_note": (f"flip test-time augmentation is on by default (--no-tta-flip turns it off): holdout accuracy "
                     f"{held['holdout_accuracy_flip']:.4f} with it, {held['holdout_accuracy']:.4f} without"
                     if tta else f"flip test-time augmentation is off by default: it did not help on the holdout "
                     f"({held['holdout_accuracy_flip']:.4f} with, {held['holdout_accuracy']:.4f} without)"),
        "terms": TERMS,
    }


def _holdout_report(report: dict, ckpt: dict, holdout_run: Path | None) -> dict:
    """The publictest.json whose holdout figures the card states: the run's own, or for a final
    fit (no holdout figures) that of ``holdout_run``, checked to be the same run with the holdout."""
    if report["holdout_accuracy"] is not None:
        if holdout_run is not None:
            sys.exit("--holdout-run is for a final fit (val_split none); this run has its own holdout")
        return report
    if holdout_run is None:
        sys.exit("this run is a final fit (val_split none, no holdout of its own): name the run that chose its "
                 "settings on the holdout with --holdout-run")
    check_final_fit_of(ckpt, load_checkpoint(holdout_run / "best.pt"))
    return json.loads((holdout_run / "publictest.json").read_text(encoding="utf-8"))


def _data_text(holdout_run: Path | None) -> str:
    if holdout_run is None:
        return ("FER2013 Training (28,709 48x48 grey faces; Kaggle's folder layout), 90% trained on, a "
                "stratified 10% holdout (seed 0) choosing the epoch; PublicTest (3,589) reported only")
    return ("FER2013 Training (28,709 48x48 grey faces; Kaggle's folder layout), all trained on (a final fit); "
            f"its settings chosen on a stratified 10% holdout (seed 0) by {holdout_run.name}, the same run with "
            "the holdout kept out; PublicTest (3,589) reported only")


def _epoch_text(report: dict, held: dict, holdout_run: Path | None) -> str:
    if holdout_run is None:
        return f"best holdout epoch {report['best_epoch']}"
    return f"the last kept; {holdout_run.name}'s best holdout epoch {held['best_epoch']}"


def _teacher_names(ckpt: dict) -> list[str] | None:
    """The run's teachers, each named by the file kept in benchmarks/teachers with its bytes where
    there is one: a shipped model's name (``fer2013``) means another model once a new one ships."""
    if not ckpt.get("teachers"):
        return ckpt["config"].get("teachers")
    kept = {sha256_file(p): p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks" / "teachers").glob("*.pt")}
    return [kept.get(t["sha256"], t["model"]) for t in ckpt["teachers"]]


def _options(cfg: dict) -> str:
    """The training options beyond the defaults that change what a run learns, as card text."""
    parts = [f"mixup {cfg['mixup']}" if cfg.get("mixup") else "",
             f"random erasing {cfg['erase']}" if cfg.get("erase") else "",
             f"weight average (EMA) {cfg['ema_decay']}" if cfg.get("ema_decay") else "",
             (f"distilled from {', '.join(cfg['teachers'])} (weight {cfg['distill_weight']}, temperature "
              f"{cfg['distill_temperature']})") if cfg.get("teachers") else ""]
    return "".join(f", {p}" for p in parts if p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished sweep run folder (best.pt, publictest.json)")
    p.add_argument("name", help="the shipped model's name")
    p.add_argument("--machine", required=True, help="where it was trained, for the card")
    p.add_argument("--recipe", required=True, help="the command that trains it again, for the card")
    p.add_argument("--to", type=Path, default=MODELS_DIR, help="write into this folder instead of the package's "
                   "models: a run kept in the repository (benchmarks/teachers) to learn from later, not shipped")
    p.add_argument("--holdout-run", type=Path, help="for a final fit (val_split none): the run with the same "
                   "settings that chose them on the holdout, whose holdout figures the card states")
    args = p.parse_args()

    card = card_for(args.run, args.machine, args.recipe, args.holdout_run)
    path = ship(args.run / "best.pt", args.name, card, models_dir=args.to, face="auto")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
