"""Derive prepro/mean_shape.json: the mean 68-point face used by the landmark quality score.

Runs dlib's HOG detector (one upsample) over an evenly spaced sample of FER2013 train images,
keeps the images where it finds exactly one face, predicts the 68 landmarks on that box and
averages them by generalized Procrustes analysis (translation, rotation, uniform scale). The
result is centred, scaled to unit inter-ocular distance (distance between the eye centres) and
rotated so the eyes are level.

    .venv/bin/python benchmarks/make_mean_shape.py /work/shared/data/fer2013/train --n 4000

Also prints the Procrustes RMS residual distribution (inter-ocular units) of the shapes used, of
the whole-image boxes of the images without a detection, and of blank / noise images, which is
what QUALITY_RMS_SCALE in prepro/landmarks.py was chosen from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prepro.image_io import read_gray  # noqa: E402
from prepro.landmarks import predict_landmarks  # noqa: E402
from prepro.model_files import LandmarkModelFile  # noqa: E402


def _normalise(p: np.ndarray) -> np.ndarray:
    """Centre, scale to unit inter-ocular distance, rotate the eyes level (complex form)."""
    z = p[:, 0] + 1j * p[:, 1]
    z = z - z.mean()
    eyes = z[42:48].mean() - z[36:42].mean()  # subject's left eye minus right eye: points +x
    return z * (abs(eyes) / eyes) / abs(eyes)


def generalized_procrustes(shapes: list[np.ndarray], iterations: int = 5) -> np.ndarray:
    zs = np.array([_normalise(p) for p in shapes])  # N x 68 complex
    mean = zs[0]
    for it in range(iterations):
        # Best similarity per shape onto the current mean: one complex factor each.
        a = (np.conj(zs) * mean).sum(1) / (np.abs(zs) ** 2).sum(1)
        aligned = zs * a[:, None]
        new = _normalise(np.stack([aligned.mean(0).real, aligned.mean(0).imag], 1))
        change = np.abs(new - mean).max()
        mean = new
        print(f"GPA iteration {it + 1}: max change {change:.2e}")
    return np.stack([mean.real, mean.imag], 1)


def rms_to(mean: np.ndarray, p: np.ndarray) -> float:
    m = mean[:, 0] + 1j * mean[:, 1]
    z = p[:, 0] + 1j * p[:, 1]
    z = z - z.mean()
    a = np.vdot(z, m) / np.vdot(z, z).real
    r = m - a * z
    return float(np.sqrt((np.abs(r) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train_dir", type=Path, help="FER2013 train folder (<emotion>/*.jpg)")
    ap.add_argument("--n", type=int, default=4000, help="images sampled (evenly spaced)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "prepro" / "mean_shape.json")
    args = ap.parse_args()

    files = sorted(args.train_dir.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no */*.jpg under {args.train_dir}")
    step = max(1, len(files) // args.n)
    files = files[::step][: args.n]
    import dlib

    detector = dlib.get_frontal_face_detector()
    shape_model = LandmarkModelFile.find().load()
    detected, whole = [], []
    t0 = time.perf_counter()
    for f in files:
        gray, _ = read_gray(f)
        dets = detector(gray, 1)  # HOG with one upsample, as the shipped mean shape was made
        if len(dets) == 1:
            d = dets[0]  # dlib's corners are inclusive; boxes here have exclusive right and bottom edges
            detected.append(predict_landmarks(shape_model, gray, (d.left(), d.top(), d.right() + 1, d.bottom() + 1)))
        elif not dets:
            whole.append(predict_landmarks(shape_model, gray, _whole_box(gray)))
    print(f"{len(files)} images in {time.perf_counter() - t0:.1f} s: {len(detected)} with one face, "
          f"{len(whole)} without a detection")
    mean = generalized_procrustes(detected)

    rng = np.random.default_rng(0)
    junk = {
        "blank 48x48": [np.full((48, 48), v, np.uint8) for v in (0, 60, 128, 200, 255)],
        "noise 48x48": [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(20)],
    }
    print("Procrustes RMS residual (inter-ocular units): p5 / p25 / median / p75 / p95 / p99")
    groups = {"detected faces": detected, "no detection, whole image": whole}
    for name, imgs in junk.items():
        groups[name] = [predict_landmarks(shape_model, g, _whole_box(g)) for g in imgs]
    for name, shapes in groups.items():
        if not shapes:  # e.g. every sampled image had a detection: no percentiles to give
            print(f"  {name:28s} n=    0")
            continue
        r = np.array([rms_to(mean, p) for p in shapes])
        pct = " / ".join(f"{v:.3f}" for v in np.percentile(r, [5, 25, 50, 75, 95, 99]))
        print(f"  {name:28s} n={len(r):5d}  {pct}")

    doc = {
        "comment": (f"Mean dlib 68-point face (iBUG order, x right, y down), centred, unit inter-ocular "
                    f"distance, eyes level. Generalized Procrustes mean of the landmarks of {len(detected)} "
                    f"FER2013 train images (every {step}th file) where dlib's HOG detector (1 upsample) "
                    f"found exactly one face. Made by benchmarks/make_mean_shape.py."),
        "n_shapes": len(detected),
        "mean_shape": [[round(float(x), 4), round(float(y), 4)] for x, y in mean],
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def _whole_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """The whole image as a face box (left, top, right, bottom; right and bottom exclusive)."""
    return 0, 0, gray.shape[1], gray.shape[0]


if __name__ == "__main__":
    main()
