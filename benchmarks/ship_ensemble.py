"""Ship the ensemble of models that have cards (shipped models, or runs kept in
benchmarks/teachers by ship_model.py --to) as the shipped model NAME, its card made from theirs:

    python benchmarks/ship_ensemble.py fer2013-ensemble fer2013 benchmarks/teachers/kd3-two-branch-face-50ep-s1.pt
    python benchmarks/choose_tta.py fer2013-ensemble bench-out/fer2013-native --ship fer2013-ensemble

The second command chooses its test-time views on the holdout its members share and writes the
PublicTest figures into the card; no figure is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ship_model import TERMS  # noqa: E402  (benchmarks/ is on the path)

from training.ensemble_checkpoint import write_ensemble  # noqa: E402
from training.model_names import resolve_checkpoint  # noqa: E402
from training.zoo import ship  # noqa: E402


def ensemble_card(refs: list[str]) -> dict:
    """The card of the ensemble of ``refs``, from the members' own cards."""
    cards = []
    for ref in refs:
        card = resolve_checkpoint(ref)[1].get("card") or {}
        if not all(card.get(k) for k in ("title", "data", "recipe", "training")):
            sys.exit(f"{ref} has no model card: ship it first (benchmarks/ship_model.py RUN NAME --to benchmarks/teachers)")
        cards.append(card)
    names = [Path(ref).stem for ref in refs]
    return {
        "title": f"ensemble of {len(refs)} networks on FER2013 ({', '.join(c['title'].split(' on ')[0] for c in cards)}; "
                 "their probabilities averaged)",
        "data": cards[0]["data"] + "; every member chose its epoch on the same holdout",
        "recipe": " | ".join(f"{name}: {c['recipe']}" for name, c in zip(names, cards))
                  + f"; joined with `faceblocks ensemble {' '.join(refs)} OUT`",
        "training": " | ".join(f"{name}: {c['training']}" for name, c in zip(names, cards)),
        "preprocessing": "each member's blocks are cut the same way; " + "; ".join(
            f"{name}: {c.get('preprocessing', '')}" for name, c in zip(names, cards)),
        "members": [{"model": ref, **{k: c[k] for k in ("title", "recipe", "training")}} for ref, c in zip(refs, cards)],
        "terms": TERMS,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the shipped model's name")
    p.add_argument("members", nargs="+", help="two or more models with cards (shipped names or .pt files)")
    args = p.parse_args()
    card = ensemble_card(args.members)
    with tempfile.TemporaryDirectory() as tmp:
        joined = write_ensemble(args.members, Path(tmp) / "ensemble.pt")
        path = ship(joined, args.name, card, face="auto")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
