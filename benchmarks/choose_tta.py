"""Choose a model's test-time augmentation on its holdout, and with --ship write it into its card.

Scores the model's views (`training.tta`: none, the mirror image, one-pixel shifts, both) on the
holdout its training carved from the train split (the part that chose its epoch) and on the val
split (FER2013's PublicTest, only reported); the default is the set of views with the best holdout
macro-F1, the metric that chose the epoch. ``--ship NAME`` rewrites the shipped model NAME's card
with that default and the PublicTest figures measured here (weights unchanged):

    python benchmarks/choose_tta.py fer2013 bench-out/fer2013-native --ship fer2013

A final fit (`train --val-split none`) has no holdout of its own: ``--views-of RUN`` names the run
that chose its epochs and settings on the holdout (the same settings, val_split holdout), whose
holdout then chooses the views; PublicTest is scored with the final fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from score_models import CHOICES, check_final_fit_of, scores, view_probabilities  # noqa: E402  (on the path)


def split_scores(model, ckpt: dict, shards: str, split: str, holdout: bool) -> dict:
    """{(flip, shift): {"accuracy", "macro_f1", "per_class_f1"}} on ``split`` (its holdout part)."""
    names = list(ckpt["class_names"])
    return {c: scores(probs, y, names) for c, (probs, y) in
            view_probabilities(model, ckpt, shards, split, holdout).items()}


def recarded(card: dict, best: tuple[bool, bool], holdout: dict, public: dict, views_of: str | None = None) -> dict:
    """``card`` with ``best`` as its default views and the PublicTest figures of each choice
    (``views_of``: the run whose holdout chose them, for a final fit)."""
    from training.tta import tta_name

    note = ", ".join(f"{tta_name(*c)} {holdout[c]['accuracy']:.4f} ({holdout[c]['macro_f1']:.4f})" for c in CHOICES)
    results = {"publictest": public[best]}
    results.update({f"publictest_{tta_name(*c).replace('+', '_')}": public[c] for c in CHOICES if c != best})
    return {**card, "results": results, "tta_flip": best[0], "tta_shift": best[1],
            "tta_note": (f"{tta_name(*best)} test-time augmentation by default (--no-tta-flip / --no-tta-shift turn "
                         f"it off), chosen by the holdout's macro-F1"
                         + (f" of {views_of}, the same recipe with the holdout kept out" if views_of else "")
                         + f"; holdout accuracy (macro-F1): {note}")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model's name, a run folder or a checkpoint")
    p.add_argument("shards", help="the shards the model was trained on (train split) with val = PublicTest")
    p.add_argument("--ship", metavar="NAME", help="rewrite the shipped model NAME's card with the choice")
    p.add_argument("--views-of", metavar="RUN", help="for a final fit (val_split none): the run with the same "
                   "settings whose holdout chooses the views")
    args = p.parse_args()
    from training.checkpoint import build_model_from_checkpoint
    from training.model_names import resolve_checkpoint
    from training.tta import tta_name

    torch.set_num_threads(2)
    path, ckpt = resolve_checkpoint(args.model)
    model = build_model_from_checkpoint(ckpt).eval()
    judge, judge_ckpt = model, ckpt
    if args.views_of:
        judge_ckpt = resolve_checkpoint(args.views_of)[1]
        check_final_fit_of(ckpt, judge_ckpt)
        judge = build_model_from_checkpoint(judge_ckpt).eval()
    holdout = split_scores(judge, judge_ckpt, args.shards, judge_ckpt["config"]["train_split"], holdout=True)
    public = split_scores(model, ckpt, args.shards, "val", holdout=False)
    best = max(CHOICES, key=lambda c: holdout[c]["macro_f1"])
    if args.views_of:
        print(f"holdout: {args.views_of}'s (the final fit trained on it); PublicTest: {args.model}'s")
    print("| views | holdout accuracy | holdout macro-F1 | PublicTest accuracy | PublicTest macro-F1 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for c in CHOICES:
        mark = " (chosen)" if c == best else ""
        print(f"| {tta_name(*c)}{mark} | {100 * holdout[c]['accuracy']:.2f}% | {holdout[c]['macro_f1']:.4f} | "
              f"{100 * public[c]['accuracy']:.2f}% | {public[c]['macro_f1']:.4f} |")
    if args.ship:
        from training.zoo import ship

        card = recarded(dict(ckpt.get("card") or {}), best, holdout, public, args.views_of)
        out = ship(path, args.ship, card)
        print(f"wrote {out}")
        print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
