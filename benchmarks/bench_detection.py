"""Face detection benchmark: finding every face in real photos, and mapping CNN boxes to HOG's.

``photos``: on ../shared/data/photos (9 PASCAL VOC photos with 43 hand-drawn face boxes in
training.xml and testing.xml, plus 3 more photos without boxes, one of them dogs.jpg with no
human face), recall and precision at IoU >= 0.5 against the hand-drawn boxes, the false faces
in dogs.jpg, and images/s (median of ``--repeats`` timings of all 12 photos; one for the CNN), for each detector
and smallest-face setting; the way faceblocks runs a detector is `prepro.detection.detect_faces`
(the scale is chosen from the photo and the smallest face wanted). The reference rows run dlib's
HOG detector directly on the full photo, with 0 and 1 upsamplings.

    python benchmarks/bench_detection.py photos ../shared/data/photos --repeats 3

``calibrate``: on FER2013 faces that both detectors find, the CNN (MMOD) box's offset and size
relative to the HOG box, which `prepro.detection.CNN_TO_HOG` holds, and the landmark agreement
(normalised mean error against the HOG-box landmarks) of CNN boxes used raw and mapped.

    python benchmarks/bench_detection.py calibrate ../shared/data/fer2013 --images 600
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prepro import detection as D  # noqa: E402
from prepro.image_io import decode_gray  # noqa: E402
from prepro.landmarks import landmark_error, predict_landmarks  # noqa: E402
from prepro.model_files import LandmarkModelFile  # noqa: E402


def hand_boxes(folder: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """file name -> hand-drawn boxes (left, top, right, bottom) from dlib's imglab XML files."""
    out: dict[str, list] = {}
    for xml in ("training.xml", "testing.xml"):
        if not (folder / xml).is_file():
            continue
        for image in ET.parse(folder / xml).getroot().iter("image"):
            boxes = out.setdefault(image.get("file"), [])
            for b in image.iter("box"):
                l, t, w, h = (float(b.get(k)) for k in ("left", "top", "width", "height"))
                boxes.append((l, t, l + w, t + h))
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(found: list, truth: list) -> tuple[int, int]:
    """(true positives, false positives): greedy one-to-one matching at IoU >= 0.5."""
    pairs = sorted(((iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, used_t = set(), set()
    for v, i, j in pairs:
        if v >= 0.5 and i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    return len(used_f), len(found) - len(used_f)


def _reference(kind: str, upsample: int):
    import dlib

    det = dlib.get_frontal_face_detector()

    def run(gray: np.ndarray) -> list:
        rects, _scores, _ = det.run(gray, upsample, 0.0)
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects]
    return run


def _faceblocks(settings: D.DetectorSettings):
    def run(gray: np.ndarray) -> list:
        return [d.box for d in D.detect_faces(gray, settings)]
    return run


def photos(folder: Path, repeats: int, cnn: bool = True) -> None:
    truth = hand_boxes(folder)
    files = sorted(folder.glob("*.jpg"))
    grays = {f.name: decode_gray(f, work_max_side=1024) for f in files}
    setups = [("dlib HOG on the full photo, no upsampling (reference)", _reference("hog", 0)),
              ("dlib HOG on the full photo, 1 upsampling (reference)", _reference("hog", 1))]
    for detector in ("hog", "cnn") if cnn else ("hog",):
        for min_face in (80, 40, 30):
            s = D.DetectorSettings(detector=detector, min_face=min_face)
            setups.append((f"faceblocks {detector}, min_face {min_face}" + (" (default)" if min_face == 40 and
                                                                              detector == "hog" else ""),
                           _faceblocks(s)))
    setups.append(("faceblocks hog, min_face 40, `--search coarse-fine`",
                   _faceblocks(D.DetectorSettings(search="coarse-fine"))))
    n_true = sum(len(v) for v in truth.values())
    print("| detector | faces found | recall | precision | false faces in dogs.jpg | images/s |")
    print("|---|---|---|---|---|---|")
    for name, run in setups:
        tp = fp = dogs = 0
        times = []
        for rep in range(repeats if " cnn" not in name else 1):  # the CNN is slow: one timing
            t0 = time.perf_counter()
            found = {f: run(d.gray) for f, d in grays.items()}
            times.append(time.perf_counter() - t0)
        for f, boxes in found.items():
            scale = grays[f].scale
            boxes = [tuple(v / scale for v in b) for b in boxes]
            if f in truth:
                a, b = match(boxes, truth[f])
                tp, fp = tp + a, fp + b
            elif f == "dogs.jpg":
                dogs += len(boxes)
        prec = tp / max(tp + fp, 1)
        print(f"| {name} | {tp} of {n_true} | {100 * tp / n_true:.0f}% | {100 * prec:.0f}% | {dogs} | "
              f"{len(files) / statistics.median(times):.2f} |", flush=True)


def calibrate(fer: Path, images: int) -> None:
    files = sorted(fer.glob("test/*/PublicTest_*.jpg"))
    files = files[:: max(1, len(files) // images)][:images]
    shape_model = LandmarkModelFile.default().load()
    hog, cnn = D.DetectorSettings(detector="hog"), D.DetectorSettings(detector="cnn")
    raw_map = dict(D.CNN_TO_HOG)
    rel, err_raw, err_mapped = [], [], []
    for f in files:
        g = decode_gray(f).gray
        h = D.detect_faces(g, hog)
        D.CNN_TO_HOG.update(dx=0.0, dy=0.0, size=1.0)  # the CNN's own box
        c = D.detect_faces(g, cnn)
        D.CNN_TO_HOG.update(raw_map)
        if not h or not c:
            continue
        hb, cb = h[0].box, c[0].box
        cw = cb[2] - cb[0]
        rel.append(((hb[0] + hb[2] - cb[0] - cb[2]) / 2 / cw, (hb[1] + hb[3] - cb[1] - cb[3]) / 2 / cw,
                    (hb[2] - hb[0]) / cw))
        ref = predict_landmarks(shape_model, g, hb)
        for box, errs in ((cb, err_raw), (D.cnn_box_to_hog(cb), err_mapped)):
            errs.append(landmark_error(predict_landmarks(shape_model, g, box), ref))
    r = np.array(rel)
    print(f"{len(r)} faces found by both; HOG box relative to the CNN box (median): centre dx {np.median(r[:, 0]):+.3f}, "
          f"dy {np.median(r[:, 1]):+.3f}, size {np.median(r[:, 2]):.3f} (times the CNN box width)")
    for name, e in (("CNN box used raw", err_raw), ("CNN box mapped (CNN_TO_HOG)", err_mapped)):
        e = np.array(e)
        print(f"{name}: landmark error vs HOG-box landmarks median {np.median(e):.3f}, > 0.10 {100 * (e > 0.1).mean():.1f}%, "
              f"> 0.20 {100 * (e > 0.2).mean():.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("photos")
    p.add_argument("folder", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cnn", action="store_true", help="leave out the (slow) CNN rows")
    c = sub.add_parser("calibrate")
    c.add_argument("fer2013", type=Path)
    c.add_argument("--images", type=int, default=600)
    args = ap.parse_args()
    if args.cmd == "photos":
        photos(args.folder, args.repeats, cnn=not args.no_cnn)
    else:
        calibrate(args.fer2013, args.images)


if __name__ == "__main__":
    main()
