"""Landmark benchmark: do the detector-free landmarks agree with the detector-box ones, and does
the quality score flag the faces where they do not?

On FER2013 faces (the PublicTest half of Kaggle's test/ folder by default):

* **yardstick**: `--face detect` as shipped (dlib's HOG detector, default settings); the
  landmarks the predictor gives from its box;
* **aligned**: `--face aligned` (no detector: the start box is estimated from the crop, a second
  look where the first fit is doubtful), and the same without the second look;
* **before**: the previous release's aligned path (the whole image as the box, and its quality
  score: shape distance to the mean face times face evidence), for comparison in the same run;
* **agreement**: normalised mean error (by the yardstick's inter-ocular distance) on the faces the
  detector finds: median, p90, share above 0.10 and 0.20;
* **flagging**: precision and recall of ``quality < 0.5`` (the documented threshold) at finding
  the faces whose error is above 0.20, the area under the ROC curve, and the best recall at a
  precision of at least 60%;
* **auto**: the share of faces that get a detector box with the default detector (hog), and with
  the CNN detector as the fallback for HOG's misses (hog+cnn);
* contact sheets of the worst cases before and after (bench-out/sheets/landmarks-before.png,
  -after.png; they show FER2013 faces, so they stay out of the repository).

    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --split test --cnn
    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --split train --every 10

Prints a Markdown table (the one in BENCHMARKS.md) and writes the raw figures as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prepro import landmarks as L  # noqa: E402
from prepro.faces import CutSettings, FaceCutter  # noqa: E402
from prepro.landmark_models import face_evidence, procrustes_rms  # noqa: E402

SPLIT_PREFIX = {"test": "PublicTest_", "train": "Training_"}


def previous_release_fit(gray: np.ndarray, shape_model) -> tuple[np.ndarray, float]:
    """The previous release's `--face aligned`: the whole image as the box; its quality score."""
    h, w = gray.shape
    marks = L.predict_landmarks(shape_model, gray, (0.0, 0.0, float(w), float(h)))
    rms = procrustes_rms(marks)
    shape_term = math.exp(-(rms / 0.3) ** 2) if math.isfinite(rms) else 0.0
    e = face_evidence(gray, marks)
    return marks, float(shape_term * (1.0 - math.exp(-(max(e, 0.0) / 0.8) ** 2)))


def measure(paths: list[Path], cnn: bool) -> dict[str, np.ndarray]:
    """Per image: yardstick landmarks (NaN when no detection), aligned landmarks and quality
    (with and without the second look), the previous release's, and the auto detector hits."""
    from prepro.image_io import decode_gray

    model_file = L.LandmarkModelFile.default()
    shape_model = model_file.load()
    detect = FaceCutter(CutSettings(face_mode="detect"), model_file)
    aligned = FaceCutter(CutSettings(face_mode="aligned"), model_file)
    n = len(paths)
    out = {k: np.full((n, 68, 2), np.nan) for k in ("yard", "aligned", "first", "before")}
    out |= {k: np.full(n, np.nan) for k in ("q_aligned", "q_first", "q_before")}
    out["cnn_hit"] = np.zeros(n, bool)
    timing = {"aligned": 0.0, "first": 0.0}
    for i, p in enumerate(paths):
        gray = decode_gray(p).gray
        d = detect.cut(gray)
        if not d.failure:
            out["yard"][i] = d.faces[0].face.landmarks
        t0 = time.perf_counter()
        a = aligned.cut(gray).faces[0].face
        timing["aligned"] += time.perf_counter() - t0
        out["aligned"][i], out["q_aligned"][i] = a.landmarks, a.quality
        t0 = time.perf_counter()
        first = _without_second_look(gray, shape_model)
        timing["first"] += time.perf_counter() - t0
        out["first"][i], out["q_first"][i] = first.landmarks, first.quality
        out["before"][i], out["q_before"][i] = previous_release_fit(gray, shape_model)
        if cnn and d.failure:
            out["cnn_hit"][i] = bool(_cnn_cutter(model_file).cut(gray).faces)
    out["ms_per_image"] = np.array([1000 * timing["aligned"] / n, 1000 * timing["first"] / n])
    return out


def _without_second_look(gray: np.ndarray, shape_model):
    from prepro.landmark_models import estimate_start_box, load_landmark_models

    return L.fit_from_box(gray, estimate_start_box(gray, load_landmark_models()), shape_model)


_CNN = {}


def _cnn_cutter(model_file):
    from prepro.detection import DetectorSettings

    if "c" not in _CNN:
        _CNN["c"] = FaceCutter(CutSettings(face_mode="detect", detector=DetectorSettings(detector="cnn")), model_file)
    return _CNN["c"]


def agreement(marks: np.ndarray, yard: np.ndarray) -> np.ndarray:
    found = np.isfinite(yard[:, 0, 0])
    return np.array([L.landmark_error(m, y) if f else np.nan for m, y, f in zip(marks, yard, found)])


def flagging(err: np.ndarray, quality: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    ok = np.isfinite(err)
    bad, q = err[ok] > 0.20, quality[ok]
    flagged = q < 0.5
    tp = int((flagged & bad).sum())
    res = {"faces_above_0.2": int(bad.sum()), "recall_at_0.5": tp / max(int(bad.sum()), 1),
           "precision_at_0.5": tp / max(int(flagged.sum()), 1)}
    if 0 < bad.sum() < len(bad):
        res["roc_auc"] = float(roc_auc_score(bad, -q))
        prec, rec, _ = precision_recall_curve(bad, -q)
        good = prec >= 0.6
        res["best_recall_at_precision_0.6"] = float(rec[good].max()) if good.any() else 0.0
    return res


def summary(name: str, err: np.ndarray, quality: np.ndarray) -> dict[str, float]:
    e = err[np.isfinite(err)]
    return {"method": name, "faces_compared": int(len(e)), "median": float(np.median(e)),
            "p90": float(np.percentile(e, 90)), "above_0.10": float((e > 0.10).mean()),
            "above_0.20": float((e > 0.20).mean()), "quality_below_0.5_all": float((quality < 0.5).mean()),
            **flagging(err, quality)}


def contact_sheet(paths: list[Path], marks: np.ndarray, yard: np.ndarray, err: np.ndarray, out: Path,
                  title: str, count: int = 24) -> None:
    """The ``count`` worst faces: yardstick landmarks in green, the method's in red."""
    import cv2

    from prepro.image_io import decode_gray

    order = [i for i in np.argsort(-np.nan_to_num(err, nan=-1.0))[:count]]
    tiles = []
    for i in order:
        g = decode_gray(paths[i]).gray
        s = 144 / max(g.shape)
        big = cv2.cvtColor(cv2.resize(g, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
        for pts, colour in ((yard[i], (60, 200, 60)), (marks[i], (40, 40, 230))):
            for x, y in (pts + 0.5) * s - 0.5:
                cv2.circle(big, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
        cv2.putText(big, f"{err[i]:.2f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(big)
    while len(tiles) % 8:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[k:k + 8]) for k in range(0, len(tiles), 8)]
    sheet = np.vstack([np.full((22, rows[0].shape[1], 3), 255, np.uint8)] + rows)
    cv2.putText(sheet, title, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)


def markdown(rows: list[dict], auto: dict) -> str:
    head = ("| path | faces | median | p90 | > 0.10 | > 0.20 | quality < 0.5 (all faces) | flags > 0.20: recall "
            "| precision | ROC AUC | best recall at 60% precision |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['method']} | {r['faces_compared']} | {r['median']:.3f} | {r['p90']:.3f} | "
                     f"{100 * r['above_0.10']:.1f}% | {100 * r['above_0.20']:.1f}% | "
                     f"{100 * r['quality_below_0.5_all']:.1f}% | {100 * r['recall_at_0.5']:.0f}% | "
                     f"{100 * r['precision_at_0.5']:.0f}% | {r.get('roc_auc', float('nan')):.3f} | "
                     f"{100 * r.get('best_recall_at_precision_0.6', float('nan')):.0f}% |")
    lines.append("")
    lines.append(f"auto: a detector box for {auto['hog']} of {auto['n']} faces ({100 * auto['hog'] / auto['n']:.1f}%) "
                 "with the default HOG detector" + (f"; {auto['hog+cnn']} ({100 * auto['hog+cnn'] / auto['n']:.1f}%) "
                                                    "with the CNN detector as the fallback" if 'hog+cnn' in auto else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fer2013", type=Path, help="the FER2013 folder (Kaggle layout: train/, test/)")
    ap.add_argument("--split", choices=sorted(SPLIT_PREFIX), default="test")
    ap.add_argument("--every", type=int, default=1, help="every Nth image (sorted)")
    ap.add_argument("--cnn", action="store_true", help="also run the CNN detector on HOG's misses (slow)")
    ap.add_argument("--sheets", type=Path, default=ROOT / "bench-out" / "sheets",
                    help="where the contact sheets go (they show FER2013 faces: never commit them)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    paths = sorted(args.fer2013.glob(f"{args.split}/*/{SPLIT_PREFIX[args.split]}*.jpg"))[::args.every]
    if not paths:
        raise SystemExit(f"no {args.split} images under {args.fer2013}")
    t0 = time.perf_counter()
    r = measure(paths, args.cnn)
    errs = {k: agreement(r[k], r["yard"]) for k in ("before", "first", "aligned")}
    rows = [summary("before: whole image as the box (previous release)", errs["before"], r["q_before"]),
            summary("estimated start box, no second look", errs["first"], r["q_first"]),
            summary("estimated start box + second look (shipped `aligned`)", errs["aligned"], r["q_aligned"])]
    found = int(np.isfinite(r["yard"][:, 0, 0]).sum())
    auto = {"n": len(paths), "hog": found}
    if args.cnn:
        auto["hog+cnn"] = found + int(r["cnn_hit"].sum())
    print(markdown(rows, auto))
    print(f"\naligned: {r['ms_per_image'][0]:.2f} ms an image with the second look, {r['ms_per_image'][1]:.2f} "
          f"without (one process, this machine); {len(paths)} images in {time.perf_counter() - t0:.0f} s")
    if args.sheets:
        contact_sheet(paths, r["before"], r["yard"], errs["before"], args.sheets / "landmarks-before.png",
                      "before: worst 24 (green: detector-box landmarks, red: whole-image box)")
        contact_sheet(paths, r["aligned"], r["yard"], errs["aligned"], args.sheets / "landmarks-after.png",
                      "after: worst 24 (green: detector-box landmarks, red: shipped aligned)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "auto": auto, "ms_per_image": r["ms_per_image"].tolist(),
                                         "images": len(paths), "split": args.split}, indent=1))


if __name__ == "__main__":
    main()
