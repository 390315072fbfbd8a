"""Derive prepro/landmark_net.npz: the landmark network distilled from dlib (`--landmarks net`).

From FER2013 **Training** faces (Kaggle folder layout; PublicTest is never read):

1. **targets**: dlib's HOG detector as `--face detect` runs it (`prepro.detection.detect_faces`,
   default settings) and the landmarks dlib's predictor fits from its box: the yardstick of
   `benchmarks/bench_landmarks.py` (shared with make_landmark_models.py's cache format);
2. the **margin** that turns a detector box into the crop the network reads: the relation of
   the FER2013 crops to HOG's boxes on them (median), so both kinds of input look alike;
3. the **network** (torch at build time only), trained on 80% of the faces with augmentation that
   shifts, scales, rotates and mirrors the crop (mirroring permutes the points), loss the mean
   point distance in inter-ocular units, the measure the benchmark reports;
4. the **refinement stages** (`prepro.landmark_refine`), learnt on the same 80% and their mirror
   images: each a ridge regression from the features around the points to the moves that bring
   them onto dlib's, from the network's run-time fits and from starts moved by other faces'
   network errors;
5. the **error head**, trained on the other 20% (faces the network never saw; identity and
   augmented views, and faceless junk images) to predict log(landmark error), cross-fitted in two
   folds so that the **quality** calibration (logistic, "within 0.20 inter-ocular distances")
   reads out-of-sample estimates; it learns the error of the refined points;
6. the file, its card holding the held-back figures.

    .venv/bin/python benchmarks/make_landmark_net.py ../shared/data/fer2013/train --work bench-out/lmnet

``--second-look-table`` prints, for the shipped file, how `--second-look` trades on the held-back
faces (the choice of `prepro.landmark_net.SECOND_LOOK_ABOVE`) and builds nothing.

Every stage is cached in --work, so a rerun resumes (training from its last epoch). Waits while
/tmp/cpu-busy exists (checked between epochs), so that timed benchmarks on the machine stay fair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_landmarks import flagging, net_fit_list, net_fits  # noqa: E402
from make_landmark_models import junk_images, yardstick  # noqa: E402

from prepro import landmark_net as ln  # noqa: E402
from prepro import landmark_refine as lr  # noqa: E402
from prepro.landmarks import LEFT_EYE, RIGHT_EYE, fits_from_boxes, landmark_error  # noqa: E402
from prepro.model_files import LANDMARK_MODEL_TERMS, LandmarkModelFile  # noqa: E402

SIDE = 40  # the network's input
CHANNELS = (1, 16, 24, 48)  # three 3x3 stride-2 convolutions: 40 -> 20 -> 10 -> 5
HIDDEN = 128
AUGMENT = (0.14, 0.08, 0.04)  # standard deviations of the rotation (radians), log scale and shift (crop sides)
HELD_BACK_EVERY = 5  # every 5th face (by file order) trains the error head, never the network
# Refinement (prepro.landmark_refine): one stage per grid spacing (inter-ocular units), coarse to
# fine; each face starts from the network's fit and from START_COPIES - 1 more starts (its dlib
# points moved by another face's network error); ridge strength; modes of the moves kept.
REFINE_SPACINGS = (0.12, 0.08, 0.05, 0.035)
START_COPIES = 3
RIDGE = 0.02
MOVE_MODES = 32
BUSY_FLAG = Path("/tmp/cpu-busy")
SECOND_LOOK_CHOICES = (0.05, 0.06, 0.07, 0.08, 0.10)  # estimated errors above which dlib fits again


def wait_while_busy() -> None:
    while BUSY_FLAG.exists():
        time.sleep(30)


def crop_margin(boxes: np.ndarray, side: int) -> np.ndarray:
    """(dx, dy, scale) taking a HOG box on a FER2013 crop to the crop itself (medians)."""
    bs = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.array([np.median((side / 2 - cx) / bs), np.median((side / 2 - cy) / bs), np.median(side / bs)])


def random_views(n: int, rng: np.random.Generator, identity: bool = False) -> np.ndarray:
    """N augmentation draws (mirror, rotation in radians, log scale, shift x, shift y in crop sides)."""
    if identity:
        return np.zeros((n, 5))
    rot, scale, shift = AUGMENT
    return np.stack([rng.random(n) < 0.5, rng.normal(0, rot, n).clip(-3 * rot, 3 * rot),
                     rng.normal(0, scale, n).clip(-3 * scale, 3 * scale),
                     rng.normal(0, shift, n).clip(-3 * shift, 3 * shift),
                     rng.normal(0, shift, n).clip(-3 * shift, 3 * shift)], 1)


def view_crops(imgs: np.ndarray, marks: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crops the network reads (N x SIDE x SIDE uint8) of each image seen through its view, and
    its landmarks moved with it (crop pixels, NaN for a junk image's)."""
    import cv2

    side = imgs.shape[1]
    k = side / SIDE
    base = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]])  # = ln.cut_crop's
    c = (SIDE - 1) / 2
    crops = np.empty((len(imgs), SIDE, SIDE), np.uint8)
    out = np.empty_like(marks, dtype=np.float64)
    for i, (mirror, rot, log_s, sx, sy) in enumerate(views):
        a = math.exp(log_s)
        around = np.array([[a * math.cos(rot), -a * math.sin(rot), 0], [a * math.sin(rot), a * math.cos(rot), 0],
                           [0, 0, 1]])
        move = np.array([[1, 0, c + sx * SIDE], [0, 1, c + sy * SIDE], [0, 0, 1]]) @ around @ \
            np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]])
        m = (move @ base)[:2]
        crops[i] = cv2.warpAffine(imgs[i], m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[i] = marks[i] @ m[:, :2].T + m[:, 2]
        if mirror:
            crops[i] = crops[i][:, ::-1]
            out[i] = ln.mirror_landmarks(out[i][None], SIDE)[0]
    return crops, out


def to_unit(marks: np.ndarray) -> np.ndarray:
    """Crop pixels -> the network's -1..1 coordinates."""
    return (marks + 0.5) * (2 / SIDE) - 1


def build_net():
    from torch import nn

    layers: list = []
    for cin, cout in zip(CHANNELS[:-1], CHANNELS[1:]):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    cells = CHANNELS[-1] * (SIDE // 8) ** 2
    layers += [nn.Flatten(), nn.Linear(cells, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 136)]
    return nn.Sequential(*layers)


def point_loss(pred, target):
    """Mean point distance in units of the target's inter-ocular distance (the benchmark's measure)."""
    import torch

    p, t = pred.view(-1, 68, 2), target.view(-1, 68, 2)
    iod = (t[:, RIGHT_EYE].mean(1) - t[:, LEFT_EYE].mean(1)).norm(dim=1).clamp_min(1e-3)
    return (torch.sqrt(((p - t) ** 2).sum(2) + 1e-6).mean(1) / iod).mean()


def train_net(imgs: np.ndarray, marks: np.ndarray, work: Path, epochs: int, seed: int = 0):
    """The landmark network, trained on augmented views; a checkpoint per epoch (resumable)."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    net = build_net()
    steps_per_epoch = math.ceil(len(imgs) / 128)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    ckpt = work / "net.pt"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        start = state["epoch"]
    for epoch in range(start, epochs):
        wait_while_busy()
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed * 1000 + epoch)  # the epoch's views: the same after a resume
        crops, targets = view_crops(imgs, marks, random_views(len(imgs), rng))
        x = torch.from_numpy(ln.normalised(crops))[:, None]
        y = torch.from_numpy(to_unit(targets).reshape(len(imgs), -1).astype(np.float32))
        net.train()
        total = 0.0
        for step, j in enumerate(torch.randperm(len(imgs), generator=torch.Generator().manual_seed(epoch)).split(128)):
            if step % 20 == 0:  # a timed benchmark may start mid-epoch: pause for it
                wait_while_busy()
            loss = point_loss(net(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(j)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1}, ckpt)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(imgs):.4f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return net.eval()


def exported_layers(net) -> dict[str, list]:
    """numpy (im2col-ordered) weights with the batch norms folded into the convolutions."""
    from torch import nn

    mods = list(net)
    convs = []
    for k, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            bn = mods[k + 1]
            g = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
            w = m.weight.detach().numpy() * g[:, None, None, None]  # cout, cin, kh, kw
            convs.append((w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]),
                          bn.bias.detach().numpy() - bn.running_mean.numpy() * g))
    lin = [m for m in mods if isinstance(m, nn.Linear)]
    cells = SIDE // 8
    w0 = lin[0].weight.detach().numpy().reshape(HIDDEN, CHANNELS[-1], cells, cells).transpose(2, 3, 1, 0)
    dense = [(w0.reshape(-1, HIDDEN), lin[0].bias.detach().numpy()),
             (lin[1].weight.detach().numpy().T, lin[1].bias.detach().numpy())]
    return {"conv": convs, "dense": dense}


def numpy_net(layers: dict, margin: np.ndarray) -> ln.LandmarkNet:
    """The exported network without its error heads (for computing what the heads learn from)."""
    f32 = lambda pairs: tuple((np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in pairs)  # noqa: E731
    no_head = ln.ErrorHead((), (np.zeros(1), np.ones(1)), np.zeros(2))
    return ln.LandmarkNet(SIDE, margin, f32(layers["conv"]), f32(layers["dense"]), no_head, no_head, {})


def refine_starts(fits: np.ndarray, marks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(starts, row's face): each face's network fit, then START_COPIES - 1 copies of its dlib points
    moved by the network's error on another face (turned and scaled to this face)."""
    pose = lr.face_pose(marks)
    errors = lr.to_face_moves(fits - marks, pose)
    starts, faces = [fits], [np.arange(len(fits))]
    for _ in range(START_COPIES - 1):
        other = errors[rng.integers(0, len(fits), len(fits))]
        starts.append(marks + lr.to_image_moves(other, pose))
        faces.append(np.arange(len(fits)))
    return np.concatenate(starts), np.concatenate(faces)


def ridge_stage(feats: np.ndarray, moves: np.ndarray, spacing: float) -> lr.RefineStage:
    """The stage that best maps ``feats`` to ``moves`` (ridge, strength RIDGE relative to the rows),
    its output kept to the MOVE_MODES leading modes of the fitted moves."""
    mu, nu = feats.mean(axis=0), moves.mean(axis=0)
    xc = feats - mu
    gram = (xc.T @ xc).astype(np.float64)
    gram[np.diag_indices_from(gram)] += RIDGE * len(feats)
    w = np.linalg.solve(gram, (xc.T @ (moves - nu)).astype(np.float64))
    fitted = xc @ w
    modes = np.linalg.svd(fitted - fitted.mean(axis=0), full_matrices=False)[2][:MOVE_MODES]
    weights = w @ modes.T
    return lr.RefineStage(spacing, weights.astype(np.float32), modes.astype(np.float32),
                          (nu - (mu @ weights) @ modes).astype(np.float32))


def train_stages(net: ln.LandmarkNet, imgs: np.ndarray, marks: np.ndarray, cache: Path) -> tuple[lr.RefineStage, ...]:
    """The refinement stages, learnt on the faces that taught the network (cached in ``cache``)."""
    if cache.is_file():
        with np.load(cache) as z:
            return tuple(lr.RefineStage(float(z["spacing"][k]), z[f"w{k}"], z[f"modes{k}"], z[f"b{k}"])
                         for k in range(len(z["spacing"])))
    t0 = time.perf_counter()
    # The mirror images too (the mirror permutes the points): twice the faces for the same cost at run time.
    imgs = np.concatenate([imgs, np.ascontiguousarray(imgs[:, :, ::-1])])
    marks = np.concatenate([marks, ln.mirror_landmarks(marks, imgs.shape[2])])
    fits = net_fits(list(imgs), net=net)[0]  # the run-time fits on the whole image
    starts, face = refine_starts(fits, marks, np.random.default_rng(3))
    x, target, views = starts, marks[face], [imgs[i] for i in face]
    stages = []
    for spacing in REFINE_SPACINGS:
        wait_while_busy()
        feats, pose = lr.stage_features(views, x, spacing)
        stage = ln.half_stages((ridge_stage(feats, lr.to_face_moves(target - x, pose), spacing),))[0]
        x = x + lr.to_image_moves(stage.moves(feats).astype(np.float64), pose)
        err = np.array([landmark_error(p, t) for p, t in zip(x, target)])
        print(f"refinement stage {spacing}: taught starts above 0.10 {100 * (err > 0.10).mean():.1f}% "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        stages.append(stage)
    np.savez(cache, spacing=np.array(REFINE_SPACINGS), **{f"{key}{k}": v for k, st in enumerate(stages)
                                                          for key, v in (("w", st.weights), ("modes", st.modes),
                                                                         ("b", st.bias))})
    return tuple(stages)


def head_rows(net: ln.LandmarkNet, imgs: np.ndarray, marks: np.ndarray, views_per_face: int,
              n_junk: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What the error heads learn from: held-back faces (view 0 as they are, then augmented views)
    and junk images (error 1), each with the heads' inputs and the real errors of the refined points
    (x, error) and of the network's own (x_fast, error_fast)."""
    face = np.repeat(np.arange(len(imgs)), views_per_face)
    view = np.tile(np.arange(views_per_face), len(imgs))
    views = random_views(len(face), rng)
    views[view == 0] = 0
    crops, targets = view_crops(imgs[face], marks[face], views)
    junk = np.stack(junk_images(n_junk, imgs.shape[1], rng))
    jcrops, _ = view_crops(junk, np.zeros((n_junk, 68, 2)), random_views(n_junk, rng, identity=True))
    every = np.concatenate([crops, jcrops])
    unit, hidden = net.forward(ln.normalised(every))
    own = (unit.astype(np.float64) + 1) * (SIDE / 2) - 0.5
    pred, moves = lr.refine(list(every), own, net.refine)
    signs = ln.refinement_signs(list(every), pred, moves)
    err = np.r_[[landmark_error(p, t) for p, t in zip(pred[:len(face)], targets)], np.ones(n_junk)]
    err_fast = np.r_[[landmark_error(p, t) for p, t in zip(own[:len(face)], targets)], np.ones(n_junk)]
    return {"x": ln.head_input(hidden, own, signs), "error": err, "x_fast": ln.head_input(hidden, own),
            "error_fast": err_fast, "group": np.r_[face, len(imgs) + np.arange(n_junk)],
            "view": np.r_[view, np.zeros(n_junk, int)], "junk": np.r_[np.zeros(len(face), bool), np.ones(n_junk, bool)]}


def cached_head_rows(cache: Path, net: ln.LandmarkNet, imgs: np.ndarray, marks: np.ndarray,
                     views: int) -> dict[str, np.ndarray]:
    """`head_rows` (a tenth as many junk images as faces), cached for this network's weights."""
    width = ln.head_input(np.zeros((1, HIDDEN), np.float32), np.zeros((1, 68, 2)), np.zeros((1, 5))).shape[1]
    key = np.array([float(np.sum([w.sum() for w, _ in net.convs + net.dense])), views,
                    float(np.sum([st.weights.sum() for st in net.refine])), width])
    if cache.is_file():
        with np.load(cache) as z:
            if np.array_equal(z["key"], key):
                return {k: z[k] for k in z.files if k != "key"}
    rows = head_rows(net, imgs, marks, views, len(imgs) // 10, np.random.default_rng(1))
    np.savez(cache, key=key, **rows)
    return rows


def error_head(x: np.ndarray, error: np.ndarray, rows: dict[str, np.ndarray]) -> tuple[ln.ErrorHead, np.ndarray]:
    """The error head that reads ``x`` for the fits of ``error`` (final, all rows, with its quality
    calibration) and the out-of-fold log-error estimates the calibration was fitted on (two folds
    by face); ``rows``: `head_rows`' groups, views and junk."""
    from make_landmark_models import as_perceptron, train_perceptron
    from sklearn.linear_model import LogisticRegression

    y = np.clip(np.log(np.maximum(error, 1e-9)), *ln.LOG_ERROR_RANGE)
    # Hidden units that never fire here carry nothing; standardised by a zero spread they would
    # turn a rare activation elsewhere into an absurd estimate.
    live = x.std(axis=0) > 1e-3
    x = x[:, live]
    fold = rows["group"] % 2
    oof = np.zeros(len(y))
    for k in (0, 1):
        wait_while_busy()
        p = as_perceptron(train_perceptron(x[fold != k], y[fold != k], (64,), "huber", epochs=30, seed=k))
        oof[fold == k] = np.clip(p(x[fold == k])[:, 0], *ln.LOG_ERROR_RANGE)
    as_is = rows["view"] == 0  # the faces as the network meets them, and the junk
    fit = LogisticRegression(C=1.0).fit(oof[as_is, None], error[as_is] <= 0.20)
    final = train_perceptron(x, y, (64,), "huber", epochs=30, seed=2)
    return ln.ErrorHead(*head_layers(final, live), np.array([fit.coef_[0, 0], fit.intercept_[0]])), oof


def head_layers(p: dict, live: np.ndarray) -> tuple[tuple, tuple]:
    """A trained perceptron as the network's error head over all of `ln.head_input`: the columns
    it did not read get zero weights, its output scaling is folded into the last layer."""
    w, b = list(p["weights"]), list(p["biases"])
    w[-1], b[-1] = w[-1] * p["y_std"], b[-1] * p["y_std"] + p["y_mean"]
    first = np.zeros((len(live), w[0].shape[1]), np.float32)
    first[live] = w[0]
    mean, std = np.zeros(len(live), np.float32), np.ones(len(live), np.float32)
    mean[live], std[live] = p["x_mean"], p["x_std"]
    return tuple(zip([first] + w[1:], b)), (mean, std)


def held_back_figures(error: np.ndarray, rows: dict[str, np.ndarray], oof: np.ndarray, head: ln.ErrorHead) -> dict:
    """The fits' ``error`` on held-back faces as they are, and how their out-of-fold quality (``oof``
    through ``head``'s calibration) flags them."""
    sel = (rows["view"] == 0) & ~rows["junk"]
    e = error[sel]
    q, junk_q = head.calibrated(oof[sel]), head.calibrated(oof[rows["junk"]])
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {"held_back_faces": int(sel.sum()), "median": r(np.median(e)), "p90": r(np.percentile(e, 90)),
            "above_0.10": r((e > 0.10).mean()), "above_0.20": r((e > 0.20).mean()), "mean": r(e.mean()),
            "flags_above_0.10": {k: r(v) for k, v in flagging(e, q, above=0.10).items()},
            "flags_above_0.20": {k: r(v) for k, v in flagging(e, q, above=0.20).items()},
            "junk_quality_below_0.5": r((junk_q < 0.5).mean())}


def second_look_table(net: ln.LandmarkNet, imgs: np.ndarray, marks: np.ndarray) -> str:
    """For each of `SECOND_LOOK_CHOICES`: the share of the faces whose fits dlib's predictor makes
    again, and the shares above 0.10 and 0.20 after it (Markdown); ``marks`` the yardstick."""
    grays = list(imgs)
    fits = net_fit_list(grays, net=net)
    again = fits_from_boxes(grays, [f.box for f in fits], LandmarkModelFile.default().load())
    own = np.array([landmark_error(f.landmarks, m) for f, m in zip(fits, marks)])
    dlib = np.array([landmark_error(f.landmarks, m) for f, m in zip(again, marks)])
    quality = np.array([f.quality for f in fits])
    lines = ["| fitted again where the estimated error is above | faces fitted again | > 0.10 | > 0.20 | mean |",
             "|---|---:|---:|---:|---:|",
             f"| never (`net`) | 0% | {100 * (own > 0.10).mean():.2f}% | {100 * (own > 0.20).mean():.2f}% | {own.mean():.4f} |"]
    for above in SECOND_LOOK_CHOICES:
        doubtful = quality < net.head.quality_of(above)
        err = np.where(doubtful, dlib, own)
        lines.append(f"| {above:g} | {100 * doubtful.mean():.1f}% | {100 * (err > 0.10).mean():.2f}% | "
                     f"{100 * (err > 0.20).mean():.2f}% | {err.mean():.4f} |")
    lines.append(f"| 0 (all) | 100% | {100 * (dlib > 0.10).mean():.2f}% | {100 * (dlib > 0.20).mean():.2f}% | "
                 f"{dlib.mean():.4f} |")
    return "\n".join(lines)


def training_files(train_dir: Path) -> list[Path]:
    """FER2013 Training images only: a PublicTest or PrivateTest file in the folder is never read."""
    files = sorted(train_dir.glob("*/Training_*.jpg"))
    if not files:
        raise SystemExit(f"no */Training_*.jpg under {train_dir}")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train_dir", type=Path, help="FER2013 train folder (<emotion>/Training_*.jpg)")
    ap.add_argument("--work", type=Path, default=Path("bench-out/lmnet"), help="cache folder (resumes from it)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--views", type=int, default=4, help="views of each held-back face for the error head")
    ap.add_argument("--out", type=Path, default=ln.NET_FILE)
    ap.add_argument("--second-look-table", action="store_true", help="print how --second-look trades on the "
                    "held-back faces for the network in --out, and build nothing")
    args = ap.parse_args()
    files = training_files(args.train_dir)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wait_while_busy()
    ys = yardstick(files, args.work)
    found = np.flatnonzero(np.isfinite(ys["boxes"][:, 0]))
    side = ys["imgs"].shape[1]
    margin = crop_margin(ys["boxes"][found], side)
    held = found[found % HELD_BACK_EVERY == 0]
    taught = found[found % HELD_BACK_EVERY != 0]
    print(f"{len(found)} faces: {len(taught)} teach the network, {len(held)} the error head; margin "
          f"{np.round(margin, 3).tolist()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.second_look_table:
        print(second_look_table(ln.load_landmark_net(str(args.out)), ys["imgs"][held], ys["marks"][held]))
        return
    net = train_net(ys["imgs"][taught], ys["marks"][taught], args.work, args.epochs)
    layers = exported_layers(net)
    wait_while_busy()
    stages = train_stages(numpy_net(layers, margin), ys["imgs"][taught], ys["marks"][taught], args.work / "stages.npz")
    refined = dataclasses.replace(numpy_net(layers, margin), refine=stages)
    rows = cached_head_rows(args.work / "head_rows.npz", refined, ys["imgs"][held], ys["marks"][held], args.views)
    head, oof = error_head(rows["x"], rows["error"], rows)
    fast_head, oof_fast = error_head(rows["x_fast"], rows["error_fast"], rows)
    figures = (held_back_figures(rows["error"], rows, oof, head),
               held_back_figures(rows["error_fast"], rows, oof_fast, fast_head))
    card = card_of(len(files), len(found), len(taught), len(held), args.epochs, figures, time.perf_counter() - t0)
    ln.save_landmark_net(args.out, SIDE, margin, layers, {"": head, "fast_": fast_head}, card, stages)
    print(json.dumps(card, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.0f} s)")


def card_of(images: int, found: int, taught: int, held: int, epochs: int, figures: tuple[dict, dict],
            seconds: float) -> dict:
    """The file's card: its data, recipe, terms, architecture and held-back figures."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {"made_by": "benchmarks/make_landmark_net.py",
            "command": "python benchmarks/make_landmark_net.py ../shared/data/fer2013/train --work bench-out/lmnet",
            "date": time.strftime("%Y-%m-%d"),
            "data": f"FER2013 Training ({images} images; {found} faces found by dlib's HOG detector as "
                    f"`--face detect` runs it; targets: dlib's landmarks from its boxes; {taught} faces teach "
                    f"the network, {held} held back teach the error head; PublicTest never read)",
            "terms": f"research use only: learnt from FER2013 and from {LANDMARK_MODEL_TERMS}",
            "architecture": {"input": SIDE, "conv3x3_stride2_channels": list(CHANNELS[1:]), "hidden": HIDDEN,
                             "epochs": epochs,
                             "refinement": {"grid_spacings_iod": list(REFINE_SPACINGS), "radius": lr.RADIUS,
                                            "orientation_bins": lr.BINS, "features": lr.n_features(),
                                            "move_modes": MOVE_MODES, "ridge": RIDGE, "starts_per_face": START_COPIES}},
            "quality": "probability that the landmarks are within 0.20 inter-ocular distances of dlib's from the "
                       "HOG box (logistic on the error head's log-error estimate)",
            "held_back": figures[0], "held_back_fast": figures[1], "build_minutes_this_run": round(seconds / 60, 1),
            "build_cpu_minutes_this_run": round((cpu.ru_utime + cpu.ru_stime) / 60, 1)}


if __name__ == "__main__":
    main()
