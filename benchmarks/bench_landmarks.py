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
* **the landmark network** (``--net``: `--face aligned --landmarks net`): the same agreement
  (with the mean error), how its quality flags the faces above 0.10 and 0.20 beside dlib's paths,
  the landmark step's time per face (one thread, chunks of 64, the same crops) against dlib's
  predictor, the peak memory of a worker cutting one chunk with each; ``--photos``: the network
  against dlib from the detector's boxes on photographs;
* **the yardstick's floor** (``--floor``): dlib's predictor from the detector's own box moved by half
  a pixel or a pixel, or grown by 3%, against the yardstick: how far dlib disagrees with itself when
  its start box is nearly, but not exactly, the detector's (the floor of any detector-free path);
* **auto, the cheap path first** (``--auto-trust T,...``): `--face auto --auto-trust T` as preprocess
  runs it on a pre-cropped dataset: how often the detector is skipped, and the same agreement;
* contact sheets of the worst cases before and after (bench-out/sheets/landmarks-before.png,
  -after.png; they show FER2013 faces, so they stay out of the repository).

    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --split test --cnn
    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --split train --every 10
    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --net --photos ../shared/data/photos
    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --auto-trust 0.5,0.8,0.9
    .venv/bin/python benchmarks/bench_landmarks.py ../shared/data/fer2013 --floor

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
from prepro.cut_settings import CutSettings, DetectorSettings  # noqa: E402
from prepro.detection import detect_faces  # noqa: E402
from prepro.faces import FaceCutter  # noqa: E402
from prepro.image_io import decode_gray  # noqa: E402
from prepro.landmark_models import (estimate_start_box, estimate_start_boxes, face_evidence, implied_boxes,
                                    load_landmark_models, procrustes_rms)  # noqa: E402
from prepro.landmark_net import fits_from_net, load_landmark_net  # noqa: E402

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
    model_file = L.LandmarkModelFile.default()
    shape_model = model_file.load()
    detect = FaceCutter(CutSettings(face_mode="detect"), model_file)
    # The second look has been off by default since 2026-11-30: ask for it, or this row repeats "first".
    aligned = FaceCutter(CutSettings(face_mode="aligned", second_look=True), model_file)
    n = len(paths)
    out = {k: np.full((n, 68, 2), np.nan) for k in ("yard", "aligned", "first", "before")}
    out["yard_box"] = np.full((n, 4), np.nan)
    out |= {k: np.full(n, np.nan) for k in ("q_aligned", "q_first", "q_before")}
    out["cnn_hit"] = np.zeros(n, bool)
    timing = {"aligned": 0.0, "first": 0.0}
    for i, p in enumerate(paths):
        gray = decode_gray(p).gray
        d = detect.cut(gray)
        if not d.failure:
            out["yard"][i] = d.faces[0].face.landmarks
            out["yard_box"][i] = detect_faces(gray, DetectorSettings())[0].box  # as found, not clamped
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
    return L.fit_from_box(gray, estimate_start_box(gray, load_landmark_models()), shape_model)


_CNN = {}


def _cnn_cutter(model_file):
    if "c" not in _CNN:
        _CNN["c"] = FaceCutter(CutSettings(face_mode="detect", detector=DetectorSettings(detector="cnn")), model_file)
    return _CNN["c"]


def agreement(marks: np.ndarray, yard: np.ndarray) -> np.ndarray:
    found = np.isfinite(yard[:, 0, 0])
    return np.array([L.landmark_error(m, y) if f else np.nan for m, y, f in zip(marks, yard, found)])


def flagging(err: np.ndarray, quality: np.ndarray, above: float = 0.20) -> dict[str, float]:
    """How well ``quality < 0.5`` finds the faces whose error is above ``above``."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score

    ok = np.isfinite(err)
    bad, q = err[ok] > above, quality[ok]
    flagged = q < 0.5
    tp = int((flagged & bad).sum())
    res = {f"faces_above_{above:g}": int(bad.sum()), "recall_at_0.5": tp / max(int(bad.sum()), 1),
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
            "above_0.20": float((e > 0.20).mean()), "mean": float(e.mean()),
            "quality_below_0.5_all": float((quality < 0.5).mean()),
            **flagging(err, quality)}


def net_fit_list(grays: list[np.ndarray], chunk: int = 64, refined: bool = True,
                 net=None, second_look: bool = False) -> list[L.Fit]:
    """`--face aligned --landmarks net` (``refined``) or `net-fast`, with `--second-look` or not: the
    fit of every crop, a worker's chunk at a time, by ``net`` (the shipped network by default)."""
    net = net or load_landmark_net()
    shape_model = L.LandmarkModelFile.default().load() if second_look else None
    return [f for k in range(0, len(grays), chunk) for f in fits_from_net(grays[k:k + chunk], [None] * len(
        grays[k:k + chunk]), net, refined, shape_model)]


def net_fits(grays: list[np.ndarray], chunk: int = 64, refined: bool = True,
             net=None, second_look: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`net_fit_list`'s landmarks (N x 68 x 2) and qualities (N,)."""
    fits = net_fit_list(grays, chunk, refined, net, second_look)
    return np.stack([f.landmarks for f in fits]), np.array([f.quality for f in fits])


def landmark_step_ms(grays: list[np.ndarray], repeats: int = 3, chunk: int = 64) -> dict[str, float]:
    """Milliseconds per face of the landmark step alone, one thread, the same crops in chunks of
    ``chunk``: the network (crop, network, error head; with the second look, dlib's refits of its
    doubtful fits) against dlib's predictor from the
    estimated start box (the predictor alone, and with its quality); best of ``repeats``."""
    from threadpoolctl import threadpool_limits

    net, shape_model = load_landmark_net(), L.LandmarkModelFile.default().load()
    chunks = [grays[k:k + chunk] for k in range(0, len(grays), chunk)]
    starts = [estimate_start_boxes(c, load_landmark_models()) for c in chunks]
    steps = {"net": lambda c, b: fits_from_net(c, [None] * len(c), net),
             "net-fast": lambda c, b: fits_from_net(c, [None] * len(c), net, refined=False),
             "net --second-look": lambda c, b: fits_from_net(c, [None] * len(c), net, second_look=shape_model),
             "dlib predictor": lambda c, b: L.predict_landmarks_many(shape_model, c, b),
             "dlib predictor + quality": lambda c, b: L.fits_from_boxes(c, b, shape_model)}
    out = {}
    with threadpool_limits(1):
        for name, step in steps.items():
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for c, b in zip(chunks, starts):
                    step(c, b)
                times.append(time.perf_counter() - t0)
            out[name] = 1000 * min(times) / len(grays)
    return out


def worker_memory_mb(landmarks: str, paths: list[Path], second_look: bool = False) -> float:
    """Peak resident memory (MB) of a fresh process that cuts 64 crops as a `preprocess --face
    aligned` worker does with ``landmarks`` (models loaded, one chunk), with `--second-look` or not."""
    import subprocess

    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (Linux keeps it across exec).
    code = ("import re, sys; from prepro.cut_settings import CutSettings; "
            "from prepro.faces import FaceCutter; from prepro.model_files import LandmarkModelFile; "
            f"c = FaceCutter(CutSettings(face_mode='aligned', landmarks={landmarks!r}, second_look={second_look}), "
            "LandmarkModelFile.default()); "
            "c.cut_many(sys.argv[1:]); "
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024)")
    res = subprocess.run([sys.executable, "-c", code, *map(str, paths[:64])], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return float(res.stdout.split()[-1])


def photo_agreement(photo_dir: Path) -> dict[str, float]:
    """On photographs, every face the default detector finds: the network's landmarks from its box
    (with the margin; with the second look, dlib's from that box where the network doubts its fit)
    against dlib's from the same box."""
    model_file = L.LandmarkModelFile.default()
    kinds = (("dlib", False), ("net", False), ("net-fast", False), ("net", True))
    cutters = [FaceCutter(CutSettings(face_mode="detect", landmarks=k, second_look=look), model_file) for k, look in kinds]
    errors: dict[str, list[float]] = {"net": [], "net-fast": [], "net --second-look": []}
    for path in sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        dlib_cut, *net_cuts = (c.cut(path, all_faces=True) for c in cutters)
        for name, net_cut in zip(errors, net_cuts):
            for a, b in zip(dlib_cut.faces, net_cut.faces):  # the same detector: the same boxes, in order
                errors[name].append(L.landmark_error(b.face.landmarks, a.face.landmarks))
    out = {}
    for name, values in errors.items():
        e = np.array(values)
        out[name] = {"faces": len(e), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
                     "above_0.10": float((e > 0.10).mean()), "above_0.20": float((e > 0.20).mean()),
                     "mean": float(e.mean())}
    return out


def flag_markdown(rows: list[tuple[str, np.ndarray, np.ndarray]], above: float = 0.10) -> str:
    """How well ``quality < 0.5`` (and the quality as a ranking) finds the faces above ``above``."""
    lines = [f"| path | faces above {above:.2f} | quality < 0.5: recall | precision | ROC AUC | "
             "best recall at 60% precision |", "|" + "---|" * 6]
    for name, err, q in rows:
        f = flagging(err, q, above)
        lines.append(f"| {name} | {f[f'faces_above_{above:g}']} | {100 * f['recall_at_0.5']:.0f}% | "
                     f"{100 * f['precision_at_0.5']:.0f}% | {f.get('roc_auc', float('nan')):.3f} | "
                     f"{100 * f.get('best_recall_at_precision_0.6', float('nan')):.0f}% |")
    return "\n".join(lines)


def net_report(paths: list[Path], r: dict[str, np.ndarray], errs: dict[str, np.ndarray]) -> dict:
    """The network against dlib on the same faces: agreement, flags (> 0.10 and > 0.20), the
    landmark step's speed and a worker's memory; prints the Markdown tables."""
    grays = [decode_gray(p).gray for p in paths]
    marks, quality = net_fits(grays)
    fast_marks, fast_quality = net_fits(grays, refined=False)
    looked_marks, looked_quality = net_fits(grays, second_look=True)
    fast_looked_marks, fast_looked_quality = net_fits(grays, refined=False, second_look=True)
    named = [("net (`--landmarks net`, aligned)", agreement(marks, r["yard"]), quality),
             ("net-fast (`--landmarks net-fast`, aligned)", agreement(fast_marks, r["yard"]), fast_quality),
             ("net + `--second-look`", agreement(looked_marks, r["yard"]), looked_quality),
             ("net-fast + `--second-look`", agreement(fast_looked_marks, r["yard"]), fast_looked_quality),
             ("dlib aligned (estimated start box, the default)", errs["first"], r["q_first"]),
             ("dlib aligned + `--second-look`", errs["aligned"], r["q_aligned"])]
    rows = [summary(n, e, q) for n, e, q in named]
    print("\n" + markdown(rows, None))
    for above in (0.10, 0.20):
        print("\n" + flag_markdown(named, above))
    speed = landmark_step_ms(grays)
    memory = {k: worker_memory_mb(k, paths) for k in ("dlib", "net", "net-fast")}
    memory["net --second-look"] = worker_memory_mb("net", paths, second_look=True)
    print(f"\nlandmark step, ms a face (one thread, chunks of 64, {len(grays)} crops): "
          + ", ".join(f"{k} {v:.3f}" for k, v in speed.items())
          + f"; the network {speed['dlib predictor'] / speed['net']:.1f}x dlib's predictor, net-fast "
          f"{speed['dlib predictor'] / speed['net-fast']:.1f}x, net with the second look "
          f"{speed['dlib predictor'] / speed['net --second-look']:.1f}x")
    print("peak memory of a worker cutting one chunk: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()))
    return {"rows": rows, "flags": {str(a): [flagging(e, q, a) for _, e, q in named] for a in (0.10, 0.20)},
            "landmark_step_ms": speed, "worker_memory_mb": memory}


def contact_sheet(paths: list[Path], marks: np.ndarray, yard: np.ndarray, err: np.ndarray, out: Path,
                  title: str, count: int = 24) -> None:
    """The ``count`` worst faces: yardstick landmarks in green, the method's in red."""
    import cv2

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


def auto_trust_rows(paths: list[Path], yard: np.ndarray, trusts: list[float], chunk: int = 64) -> str:
    """`--face auto --auto-trust T` as preprocess cuts a pre-cropped dataset (chunks of 64): the
    share of images the detector skipped, and the agreement with the yardstick where HOG finds a face."""
    grays = [decode_gray(p).gray for p in paths]
    found = np.isfinite(yard[:, 0, 0])
    lines = ["| `--auto-trust` | detector skipped | > 0.10 | > 0.20 | mean |", "|---|---:|---:|---:|---:|"]
    for t in trusts:
        cutter = FaceCutter(CutSettings(face_mode="auto", pre_cropped=True, auto_trust=t), L.LandmarkModelFile.default())
        faces = [c.faces[0].face for a in range(0, len(grays), chunk) for c in cutter.cut_many(grays[a:a + chunk])]
        err = agreement(np.stack([f.landmarks for f in faces]), yard)[found]
        skipped = np.mean([f.method == "estimated" for f in faces])
        lines.append(f"| {t:g} | {100 * skipped:.1f}% | {100 * (err > 0.10).mean():.1f}% | "
                     f"{100 * (err > 0.20).mean():.1f}% | {err.mean():.3f} |")
    return "\n".join(lines)


# How the detector's box is moved for the floor: (name, shift right in pixels, growth about the centre).
FLOOR_MOVES = (("unmoved (a check: 0)", 0.0, 1.0), ("moved 0.5 px right", 0.5, 1.0),
               ("moved 1 px right", 1.0, 1.0), ("grown by 3%", 0.0, 1.03))


def floor_rows(paths: list[Path], yard: np.ndarray, yard_box: np.ndarray) -> str:
    """dlib's predictor from the detector's box moved a little (`FLOOR_MOVES`) against the
    yardstick (the same predictor from the box unmoved), on the faces the detector finds."""
    found = np.flatnonzero(np.isfinite(yard_box[:, 0]))
    grays = [decode_gray(paths[i]).gray for i in found]
    shape_model = L.LandmarkModelFile.default().load()
    lines = ["| dlib's predictor from the detector's box | faces | median | > 0.10 | > 0.20 | mean |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, shift, grow in FLOOR_MOVES:
        box = yard_box[found]
        centre, half = (box[:, :2] + box[:, 2:]) / 2 + [shift, 0.0], (box[:, 2:] - box[:, :2]) / 2 * grow
        marks = L.predict_landmarks_many(shape_model, grays, np.concatenate([centre - half, centre + half], axis=1))
        err = agreement(marks, yard[found])
        lines.append(f"| {name} | {len(err)} | {np.median(err):.3f} | {100 * (err > 0.10).mean():.1f}% | "
                     f"{100 * (err > 0.20).mean():.1f}% | {err.mean():.3f} |")
    return "\n".join(lines)


def hog_lattice(paths: list[Path]) -> np.ndarray:
    """The distinct boxes (M x 4, rounded to 0.001 px) HOG gives on these crops: its windows sit on
    a lattice of a few sizes and positions (for 48-px crops 99 boxes on every 4th Training face)."""
    boxes = [d[0].box for d in (detect_faces(decode_gray(p).gray, DetectorSettings()) for p in paths) if d]
    return np.unique(np.round(np.asarray(boxes, np.float64), 3), axis=0)


def lattice_rows(paths: list[Path], yard: np.ndarray, yard_box: np.ndarray, lattice: np.ndarray) -> str:
    """dlib's predictor from the box the network's (refined) points imply, as it is and snapped to
    the nearest box of HOG's ``lattice`` (all faces, or the quarter nearest a lattice box), and the
    mean of five fits from around it, on the faces the detector finds: whether a start box on HOG's
    lattice, or several start boxes, bring dlib nearer the yardstick."""
    found = np.flatnonzero(np.isfinite(yard_box[:, 0]))
    grays = [decode_gray(paths[i]).gray for i in found]
    shape_model = L.LandmarkModelFile.default().load()
    implied = implied_boxes(net_fits(grays)[0], load_landmark_models().implied_box)
    dist = ((implied[:, None, :] - lattice[None]) ** 2).sum(axis=2)
    snapped = lattice[dist.argmin(axis=1)]
    exact = np.abs(snapped - yard_box[found]).max(axis=1) < 1e-2
    near = np.sqrt(dist.min(axis=1)) <= np.quantile(np.sqrt(dist.min(axis=1)), 0.25)
    width = (implied[:, 2] - implied[:, 0])[:, None]
    moves = ((0.0, 0.0), (0.04, 0.0), (-0.04, 0.0), (0.0, 0.04), (0.0, -0.04))  # x, y in box widths; first unmoved
    five = [L.predict_landmarks_many(shape_model, grays, implied + np.array([dx, dy, dx, dy]) * width)
            for dx, dy in moves]
    err_implied, err_five = agreement(five[0], yard[found]), agreement(np.mean(five, axis=0), yard[found])
    err_snapped = agreement(L.predict_landmarks_many(shape_model, grays, snapped), yard[found])
    lines = [f"| dlib's predictor from ({len(lattice)} lattice boxes) | faces | HOG's own box | median | > 0.10 | "
             "> 0.20 | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, err, same in (("the box the network's points imply", err_implied, np.zeros_like(exact)),
                            ("that box snapped to the nearest lattice box", err_snapped, exact),
                            ("snapped for the quarter nearest a lattice box", np.where(near, err_snapped, err_implied),
                             exact & near),
                            ("the mean of five fits: that box and moved 4% of its width four ways", err_five,
                             np.zeros_like(exact))):
        lines.append(f"| {name} | {len(err)} | {100 * same.mean():.1f}% | {np.median(err):.3f} | "
                     f"{100 * (err > 0.10).mean():.1f}% | {100 * (err > 0.20).mean():.1f}% | {err.mean():.3f} |")
    return "\n".join(lines)


def markdown(rows: list[dict], auto: dict | None) -> str:
    head = ("| path | faces | median | p90 | > 0.10 | > 0.20 | mean | quality < 0.5 (all faces) | flags > 0.20: "
            "recall | precision | ROC AUC | best recall at 60% precision |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['method']} | {r['faces_compared']} | {r['median']:.3f} | {r['p90']:.3f} | "
                     f"{100 * r['above_0.10']:.1f}% | {100 * r['above_0.20']:.1f}% | {r['mean']:.3f} | "
                     f"{100 * r['quality_below_0.5_all']:.1f}% | {100 * r['recall_at_0.5']:.0f}% | "
                     f"{100 * r['precision_at_0.5']:.0f}% | {r.get('roc_auc', float('nan')):.3f} | "
                     f"{100 * r.get('best_recall_at_precision_0.6', float('nan')):.0f}% |")
    if auto is None:
        return "\n".join(lines)
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
    ap.add_argument("--sheets", type=lambda s: Path(s) if s else None, default=ROOT / "bench-out" / "sheets",
                    help="where the contact sheets go (they show FER2013 faces: never commit them); "
                    "an empty value: none")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--photos", type=Path, default=None, help="with --net: also the network against dlib on the "
                    "faces the detector finds in these photographs (e.g. ../shared/data/photos)")
    ap.add_argument("--net", action="store_true", help="also the landmark network (`--landmarks net`): agreement, "
                    "flags, the landmark step's speed against dlib's predictor, a worker's memory")
    ap.add_argument("--auto-trust", default=None, metavar="T,T,...", help="also `--face auto --auto-trust T` for "
                    "each T: how often the detector is skipped, and the agreement")
    ap.add_argument("--floor", action="store_true", help="also dlib's predictor from the detector's box moved "
                    "by half a pixel or a pixel, or grown by 3%%: how far the yardstick disagrees with itself")
    ap.add_argument("--lattice", action="store_true", help="also dlib's predictor from the network's implied box "
                    "snapped to the boxes HOG gives on every 4th Training crop")
    args = ap.parse_args()
    paths = sorted(args.fer2013.glob(f"{args.split}/*/{SPLIT_PREFIX[args.split]}*.jpg"))[::args.every]
    if not paths:
        raise SystemExit(f"no {args.split} images under {args.fer2013}")
    t0 = time.perf_counter()
    r = measure(paths, args.cnn)
    errs = {k: agreement(r[k], r["yard"]) for k in ("before", "first", "aligned")}
    rows = [summary("before: whole image as the box (previous release)", errs["before"], r["q_before"]),
            summary("estimated start box, no second look", errs["first"], r["q_first"]),
            summary("estimated start box + second look (`--second-look`)", errs["aligned"], r["q_aligned"])]
    found = int(np.isfinite(r["yard"][:, 0, 0]).sum())
    auto = {"n": len(paths), "hog": found}
    if args.cnn:
        auto["hog+cnn"] = found + int(r["cnn_hit"].sum())
    print(markdown(rows, auto))
    print(f"\naligned: {r['ms_per_image'][0]:.2f} ms an image with the second look, {r['ms_per_image'][1]:.2f} "
          f"without (one process, this machine); {len(paths)} images in {time.perf_counter() - t0:.0f} s")
    if args.auto_trust:
        print("\n" + auto_trust_rows(paths, r["yard"], [float(t) for t in args.auto_trust.split(",")]))
    if args.floor:
        print("\n" + floor_rows(paths, r["yard"], r["yard_box"]))
    if args.lattice:
        lattice = hog_lattice(sorted(args.fer2013.glob(f"train/*/{SPLIT_PREFIX['train']}*.jpg"))[::4])
        print("\n" + lattice_rows(paths, r["yard"], r["yard_box"], lattice))
    if args.sheets:
        contact_sheet(paths, r["before"], r["yard"], errs["before"], args.sheets / "landmarks-before.png",
                      "before: worst 24 (green: detector-box landmarks, red: whole-image box)")
        contact_sheet(paths, r["aligned"], r["yard"], errs["aligned"], args.sheets / "landmarks-after.png",
                      "after: worst 24 (green: detector-box landmarks, red: aligned + second look)")
    net = net_report(paths, r, errs) if args.net else None
    if args.net and args.photos:
        net["photos"] = photo_agreement(args.photos)
        print("photos, network against dlib from the detector's box: " + json.dumps(net["photos"]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "auto": auto, "ms_per_image": r["ms_per_image"].tolist(),
                                         "images": len(paths), "split": args.split, "net": net}, indent=1))


if __name__ == "__main__":
    main()
