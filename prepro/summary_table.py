"""`faceblocks inspect`'s text: a shard folder's summary (`prepro.shards.summarize`) as lines for
people: counts per split and label, face-box methods, quality, damaged shards and failures."""

from __future__ import annotations

from typing import Any

from prepro.inputs import printable


def format_summary(s: dict[str, Any], n_fail: int = 20) -> str:
    """The summary ``s`` as text, listing at most ``n_fail`` failures (the JSON has them all)."""
    # Paths, names and reasons come from files and the manifest: escaped, never raw control characters.
    lines = [f"{printable(str(s['out_dir']))}: {s['samples']} samples in {s['shards']} shards, {s['failed']} of "
             f"{s['items']} inputs failed" + ("" if s["complete"] else " (INCOMPLETE: rerun preprocess to finish)")]
    src, lm = s["source"], s["landmark_model"]
    lines.append(f"source: {printable(str(src.get('path')))} (format {printable(str(src.get('format')))}, "
                 f"dataset {printable(str(src.get('dataset')))})")
    lines.append(f"landmark model: {printable(str(lm.get('file')))} ({printable(str(lm.get('terms')))})")
    lines += _label_table(s["splits"])
    if s["box_methods"]:
        lines.append("face boxes: " + ", ".join(f"{k} {v}" for k, v in s["box_methods"].items()))
    q = s["quality"]
    if q:
        lines.append(f"quality: min {q['min']:.2f}, 5% {q['p05']:.2f}, median {q['median']:.2f}, "
                     f"mean {q['mean']:.2f}, below 0.5: {q['below_0.5']}")
    for name, v in s.get("sample_values", {}).items():  # FER+ votes, valence, arousal (per-sample totals for votes)
        lines.append(f"{name}: given for {v['given']}, missing for {v['missing']}"
                     + (f"; min {v['min']:.2f}, mean {v['mean']:.2f}, max {v['max']:.2f}" if v["given"] else ""))
    lines += [f"DAMAGED {printable(str(d))}" for d in s["damaged"]]
    if s["missing"]:
        lines.append(f"{len(s['missing'])} inputs of earlier runs are no longer in the source "
                     f"(e.g. {printable(str(s['missing'][0]))})")
    if s["failures"]:
        lines.append(f"failures ({s['failed']}):")
        lines += [f"  {printable(str(f['source']))}: {printable(str(f['reason']))}" for f in s["failures"][:n_fail]]
        if s["failed"] > n_fail:
            lines.append(f"  ... {s['failed'] - n_fail} more (--failures N, or --json for all)")
    return "\n".join(lines)


def _label_table(splits: dict[str, dict[str, int]]) -> list[str]:
    """One row per split, one column per label and a total; nothing without labels."""
    labels = sorted({lab for per in splits.values() for lab in per})
    if not labels:
        return []
    rows = [f"{'split':<8}" + "".join(f"{lab:>10}" for lab in labels) + f"{'total':>10}"]
    for split, per in splits.items():
        rows.append(f"{split:<8}" + "".join(f"{per.get(lab, 0):>10}" for lab in labels) + f"{sum(per.values()):>10}")
    return rows
