"""Derive prepro/landmark_models.npz: the start-box and quality models around dlib's predictor.

From FER2013 train (Kaggle folder layout):

1. run dlib's HOG detector as `--face detect` does (prepro.detection, default settings) and keep
   the faces it finds; the landmarks the predictor gives from that box are the yardstick;
2. learn the box the landmarks imply (box centre and size from the landmarks' centroid and
   spread) and the **start box** (a two-layer perceptron from gradient histograms of the crop to
   the detector's box; mirrored copies double the data), cross-fitted over two halves so that
   the fits used below are out-of-sample;
3. fit landmarks from the out-of-sample start boxes (what `--face aligned` does), from deliberately
   shifted and scaled boxes (bad fits), and on synthetic junk (blank, noise, stripes: no face);
   learn the **appearance** perceptron (aligned face -> does it agree with the yardstick within
   0.1 inter-ocular distances?), cross-fitted, and the logistic **quality** over the four signs,
   calibrated to "within 0.2 inter-ocular distances".

    .venv/bin/python benchmarks/make_landmark_models.py ../shared/data/fer2013/train --work bench-out/lm

Takes about 15 minutes on 2 CPU cores; intermediate results are cached in --work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prepro import landmark_models as lm  # noqa: E402
from prepro.cut_settings import DetectorSettings  # noqa: E402
from prepro.detection import detect_faces  # noqa: E402
from prepro.image_io import decode_gray  # noqa: E402
from prepro.landmarks import landmark_error, predict_landmarks  # noqa: E402
from prepro.model_files import LandmarkModelFile  # noqa: E402


def yardstick(files: list[Path], work: Path) -> dict[str, np.ndarray]:
    """Images, detector boxes (NaN when none) and detector-box landmarks; cached."""
    cache = work / "yardstick.npz"
    if cache.is_file():
        return dict(np.load(cache))
    shape_model = LandmarkModelFile.default().load()
    settings = DetectorSettings()
    imgs = np.stack([decode_gray(f).gray for f in files])
    boxes = np.full((len(files), 4), np.nan)
    marks = np.full((len(files), 68, 2), np.nan)
    t0 = time.perf_counter()
    for i, g in enumerate(imgs):
        dets = detect_faces(g, settings)
        if dets:
            boxes[i] = dets[0].box
            marks[i] = predict_landmarks(shape_model, g, dets[0].box)
    print(f"yardstick: {np.isfinite(boxes[:, 0]).sum()} of {len(files)} faces found "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"imgs": imgs, "boxes": boxes, "marks": marks}
    np.savez(cache, **out)
    return out


def box_target(boxes: np.ndarray, side: int) -> np.ndarray:
    """(centre x / W, centre y / H, log(box side / image side)) for square images of ``side``."""
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / side, (boxes[:, 1] + boxes[:, 3]) / 2 / side,
                     np.log(np.sqrt(bw * bh) / side)], 1)


def train_perceptron(x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], loss: str, epochs: int,
                     seed: int = 0) -> dict:
    """A ReLU perceptron trained with AdamW (torch, at build time only); numpy weights out."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    y = y.reshape(len(y), -1).astype(np.float32)
    regression = loss == "huber"
    y_mean, y_std = (y.mean(0), y.std(0)) if regression else (np.zeros(1), np.ones(1))
    xt = torch.from_numpy(((x - x_mean) / x_std).astype(np.float32))
    yt = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32))
    sizes = (x.shape[1],) + hidden + (y.shape[1],)
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(0.1)]
    net = nn.Sequential(*layers)
    steps = epochs * (len(x) // 256 + 1)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    crit = nn.SmoothL1Loss(beta=0.5) if regression else nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for k in range(0, len(x), 256):
            j = perm[k:k + 256]
            loss_v = crit(net(xt[j]), yt[j])
            opt.zero_grad()
            loss_v.backward()
            opt.step()
            sched.step()
    lin = [m for m in net if isinstance(m, nn.Linear)]
    return {"weights": [m.weight.detach().numpy().T.copy() for m in lin],
            "biases": [m.bias.detach().numpy().copy() for m in lin],
            "x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}


def as_perceptron(p: dict) -> lm.Perceptron:
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return lm.Perceptron(f32(p["x_mean"]), f32(p["x_std"]), tuple(map(f32, p["weights"])),
                         tuple(map(f32, p["biases"])), f32(p["y_mean"]), f32(p["y_std"]))


def start_boxes(ys: dict, found: np.ndarray, side: int) -> tuple[dict, np.ndarray]:
    """The final start-box model, and out-of-sample start boxes for every image (2-fold)."""
    imgs, boxes = ys["imgs"], ys["boxes"]
    feats = np.stack([lm.gradient_histograms(g) for g in imgs])
    mirrored = np.stack([lm.gradient_histograms(np.ascontiguousarray(g[:, ::-1])) for g in imgs])
    mboxes = np.stack([side - boxes[:, 2], boxes[:, 1], side - boxes[:, 0], boxes[:, 3]], 1)
    fold = np.arange(len(imgs)) % 2
    oos = np.zeros((len(imgs), 3))

    def fit(sel: np.ndarray) -> dict:
        x = np.concatenate([feats[sel], mirrored[sel]])
        y = np.concatenate([box_target(boxes[sel], side), box_target(mboxes[sel], side)])
        return train_perceptron(x, y, (256, 64), "huber", epochs=30)

    for k in (0, 1):
        p = as_perceptron(fit(found & (fold == k)))
        oos[fold != k] = p(feats[fold != k])
    final = fit(found)
    return final, oos


def from_target(t: np.ndarray, side: int) -> np.ndarray:
    half = 0.5 * np.exp(t[:, 2]) * side
    cx, cy = t[:, 0] * side, t[:, 1] * side
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


def junk_images(n: int, side: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Images with no face: blank, noise, blurred noise, gradients, stripes, blobs."""
    import cv2

    out = []
    for k in range(n):
        kind = k % 6
        if kind == 0:
            g = np.full((side, side), rng.integers(0, 256), np.uint8)
        elif kind == 1:
            g = rng.integers(0, 256, (side, side), dtype=np.uint8)
        elif kind == 2:
            g = cv2.GaussianBlur(rng.integers(0, 256, (side, side), dtype=np.uint8), (0, 0), rng.uniform(1, 4))
        elif kind == 3:
            a = np.linspace(0, 1, side)
            g = (255 * np.clip(np.add.outer(a * rng.uniform(-1, 1), a * rng.uniform(-1, 1)) + 0.5, 0, 1))
        elif kind == 4:
            g = 127 + 120 * np.sin(np.arange(side)[:, None] * rng.uniform(0.2, 1.5) + rng.uniform(0, 6))
            g = np.repeat(g, side, axis=1)
        else:
            g = np.full((side, side), rng.integers(0, 256), np.float64)
            for _ in range(4):
                c = tuple(int(v) for v in rng.integers(0, side, 2))
                cv2.circle(g, c, int(rng.integers(3, side // 3)), float(rng.integers(0, 256)), -1)
        out.append(np.ascontiguousarray(np.clip(g, 0, 255).astype(np.uint8)))
    return out


def candidates(ys: dict, found: np.ndarray, oos_boxes: np.ndarray, n_faces: int, n_junk: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Landmark fits with their yardstick error: the out-of-sample start-box fit of each face,
    two deliberately bad starts per face, and junk images (error infinite)."""
    shape_model = LandmarkModelFile.default().load()
    pick = rng.choice(np.flatnonzero(found), min(n_faces, int(found.sum())), replace=False)
    rows: list[tuple[int, np.ndarray, tuple, float, int]] = []  # image, marks, start box, error, kind
    for i in pick:
        g, ref = ys["imgs"][i], ys["marks"][i]
        b = oos_boxes[i]
        cx, cy, w = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]
        starts = [tuple(b)]
        for _ in range(2):
            s = w * rng.uniform(0.6, 1.4)
            x, y = cx + rng.normal(0, 0.2) * w, cy + rng.normal(0, 0.2) * w
            starts.append((x - s / 2, y - s / 2, x + s / 2, y + s / 2))
        for kind, box in enumerate(starts):
            p = predict_landmarks(shape_model, g, box)
            rows.append((int(i), p, box, landmark_error(p, ref), kind))
    junk = junk_images(n_junk, ys["imgs"].shape[1], rng)
    side = ys["imgs"].shape[1]
    for g in junk:
        s = side * rng.uniform(0.6, 1.0)
        x, y = side / 2 + rng.normal(0, 3), side / 2 + rng.normal(0, 3)
        box = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
        rows.append((-1, predict_landmarks(shape_model, g, box), box, np.inf, 3))
    imgs = [ys["imgs"][r[0]] for r in rows[:len(rows) - len(junk)]] + junk
    return {"image": np.array([r[0] for r in rows]), "marks": np.stack([r[1] for r in rows]),
            "box": np.array([r[2] for r in rows]), "error": np.array([r[3] for r in rows]),
            "kind": np.array([r[4] for r in rows]), "imgs": np.stack(imgs)}


def quality_model(c: dict[str, np.ndarray], implied: np.ndarray) -> tuple[dict, np.ndarray, float, dict]:
    """Appearance perceptron (cross-fitted) and the logistic quality over the four signs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    app_x = np.stack([lm.appearance_features(g, p) for g, p in zip(c["imgs"], c["marks"])])
    app_y = (c["error"] < 0.10).astype(np.float32)
    group = np.where(c["image"] >= 0, c["image"], np.arange(len(c["image"])))
    fold = group % 2
    app_logit = np.zeros(len(app_y))
    for k in (0, 1):
        p = as_perceptron(train_perceptron(app_x[fold == k], app_y[fold == k], (64,), "bce", epochs=20))
        app_logit[fold != k] = p(app_x[fold != k])[:, 0]
    app_final = train_perceptron(app_x, app_y, (64,), "bce", epochs=20)
    signs = np.array([np.r_[a, lm.shape_signs(g, p, tuple(b), implied)]
                      for g, p, b, a in zip(c["imgs"], c["marks"], c["box"], app_logit)])
    agree = (c["error"] <= 0.20).astype(int)
    logit = LogisticRegression(C=1.0, max_iter=2000).fit(signs, agree)
    q = logit.predict_proba(signs)[:, 1]
    first = c["kind"] == 0
    report = {"appearance_auc_error_above_0.2": round(float(roc_auc_score(c["error"] > 0.2, -app_logit)), 4),
              "quality_auc_error_above_0.2": round(float(roc_auc_score(c["error"] > 0.2, -q)), 4),
              "start_box_fits_error_above_0.2": round(float((c["error"][first] > 0.2).mean()), 4),
              "quality_below_0.5_on_start_box_fits": round(float((q[first] < 0.5).mean()), 4)}
    return app_final, logit.coef_[0], float(logit.intercept_[0]), report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train_dir", type=Path, help="FER2013 train folder (<emotion>/*.jpg)")
    ap.add_argument("--work", type=Path, default=Path("bench-out/landmark-models"), help="cache folder")
    ap.add_argument("--faces", type=int, default=10000, help="faces used for the quality model")
    ap.add_argument("--out", type=Path, default=lm.MODELS_FILE)
    args = ap.parse_args()
    files = sorted(args.train_dir.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no */*.jpg under {args.train_dir}")
    args.work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    ys = yardstick(files, args.work)
    side = ys["imgs"].shape[1]
    found = np.isfinite(ys["boxes"][:, 0])
    implied = fit_implied_box(ys["marks"][found], ys["boxes"][found])
    start_final, oos = start_boxes(ys, found, side)
    oos_boxes = from_target(oos, side)
    mae = float(np.abs(oos_boxes[found] - ys["boxes"][found]).mean())
    print(f"start box: out-of-sample mean edge error {mae:.2f} px ({time.perf_counter() - t0:.0f} s)", flush=True)
    c = candidates(ys, found, oos_boxes, args.faces, args.faces // 10, rng)
    print(f"{len(c['error'])} candidate fits ({time.perf_counter() - t0:.0f} s)", flush=True)
    app_final, qw, qb, report = quality_model(c, implied)
    about = {"made_by": "benchmarks/make_landmark_models.py", "date": time.strftime("%Y-%m-%d"),
             "data": f"FER2013 train ({len(files)} images; {int(found.sum())} faces found by dlib's HOG detector "
                     "as `--face detect` runs it, the landmarks from its boxes as the yardstick)",
             "terms": "derived from FER2013 (research use) and dlib's 68-point model (iBUG 300-W: no commercial use)",
             "quality_signs": list(lm.QUALITY_SIGNS), "start_box_mean_edge_error_px": round(mae, 3), **report}
    lm.save_landmark_models(args.out, start_final, app_final, qw, qb, implied, about)
    print(json.dumps(about, indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


def fit_implied_box(marks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean (dx, dy, size) with box centre = centroid + (dx, dy) r and side = size r, where r is
    the landmarks' RMS distance from their centroid."""
    c = marks.mean(axis=1)
    r = np.sqrt(((marks - c[:, None]) ** 2).sum(axis=2).mean(axis=1))
    bc = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return np.array([np.median((bc[:, 0] - c[:, 0]) / r), np.median((bc[:, 1] - c[:, 1]) / r), np.median(side / r)])


if __name__ == "__main__":
    main()
