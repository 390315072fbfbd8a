"""Preprocessing speed and memory against the original prior-attention loop, measured in one run.

The reference is the plain serial loop the original code used: per image, read it, run dlib's HOG
detector upsampled once, the 68-point predictor on the first face, and crop both blocks (no face,
no sample). faceblocks runs its full pipeline (listing, workers, HDF5 shards, manifest) into a
fresh folder each time, so its figures include every cost a user pays.

    python benchmarks/bench_preprocess.py fer2013 --images 3000 --repeats 3 --jobs 2
    python benchmarks/bench_preprocess.py fer2013 --images 0 --repeats 1 --jobs 2    # all 28,709
    python benchmarks/bench_preprocess.py large --repeats 3 --jobs 2 --copies 3
    python benchmarks/bench_preprocess.py budget --images 1000 --repeats 3    # per image, one process
    python benchmarks/bench_preprocess.py driver --repeats 5                  # the shard recorder's ceiling

Figures and the commands that produced them are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from prepro.config import PreprocessConfig  # noqa: E402
from prepro.image_io import decode_gray  # noqa: E402
from prepro.landmark_models import estimate_start_boxes, load_landmark_models  # noqa: E402
from prepro.landmarks import dlib_rects  # noqa: E402
from prepro.model_files import LandmarkModelFile  # noqa: E402
from prepro.outputs import new_writer_id  # noqa: E402
from prepro.readers import list_source  # noqa: E402
from prepro.shards import SHARD_DIR, Manifest  # noqa: E402
from prepro.specs import load_spec  # noqa: E402
from prepro.worker import process_chunk  # noqa: E402
from prepro.writer import ShardRecorder, plan_shards, task_attrs, write_task_shard  # noqa: E402
DATA = ROOT.parent / "shared" / "data"


def reference_loop(paths: list[str], predictor_path: str) -> tuple[float, int]:
    """The original serial loop; returns (seconds, images kept)."""
    import cv2
    import dlib

    t0 = time.perf_counter()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(predictor_path)
    kept = 0
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        faces = detector(img, 1)
        if not faces:
            continue
        shape = predictor(img, faces[0])
        pts = np.array([(q.x, q.y) for q in shape.parts()])
        blocks = []
        for idx, size in ((list(range(17, 27)) + list(range(36, 48)), (96, 32)),
                          (list(range(48, 68)), (64, 32))):
            x0, y0 = np.maximum(pts[idx].min(0), 0)
            x1, y1 = pts[idx].max(0) + 1
            crop = img[y0:y1, x0:x1]
            if crop.size == 0:
                break
            blocks.append(cv2.resize(crop, size))
        else:
            kept += 1
    return time.perf_counter() - t0, kept


class PeakRSS:
    """Polls the resident memory of this process and all its descendants; keeps the peak sum."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return out

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(self._rss(p) for p in self._tree(os.getpid())))
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def run_faceblocks(source: str, mode: str, jobs: int, fmt: str = "auto", dataset: str | None = None) -> dict:
    """One `faceblocks preprocess` process, as a user runs it: wall time includes start-up,
    listing, worker start and model loading, writing the shards and the manifest."""
    import subprocess

    out = tempfile.mkdtemp(prefix="fb-bench-")
    try:
        face, *extra = mode.split("+")  # e.g. "aligned+--no-second-look"
        cmd = [sys.executable, str(ROOT / "cli.py"), "preprocess", source, out, "--face", face,
               "--format", fmt, "-j", str(jobs), "-q", "--overwrite", *extra]
        if dataset:
            cmd += ["--dataset", dataset]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            secs = time.perf_counter() - t0
        summary = json.loads(subprocess.run([sys.executable, str(ROOT / "cli.py"), "inspect", out, "--json"],
                                            check=True, capture_output=True, text=True).stdout)
        return {"seconds": secs, "samples": summary["samples"], "failed": summary["failed"],
                "items": summary["items"], "box_methods": summary["box_methods"],
                "peak_rss_mb": mem.peak / 2**20}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def subset_folder(src: Path, n: int, dst: Path) -> list[str]:
    """Every k-th image of the sorted train tree (all classes), copied into ``dst/train/<class>``."""
    files = sorted(src.glob("train/*/*.jpg"))
    if n and n < len(files):
        step = len(files) / n
        files = [files[int(i * step)] for i in range(n)]
    for f in files:
        d = dst / "train" / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, d / f.name)
    return [str(f) for f in files]


def make_large_photos(dst: Path, n: int = 48, seed: int = 0) -> list[str]:
    """A real photo at large sizes: the astronaut portrait at 12 sizes from 300 to 4,400 px wide,
    each in n/12 variants (shifted crop, lighting), saved as JPEG. (Not mirrored: dlib's frontal
    detector misses the mirrored portrait at every size, which would only measure misses.)"""
    import cv2
    from skimage import data

    rgb = data.astronaut()[:, :, ::-1]
    sizes = np.geomspace(300, 4400, 12).astype(int)
    out = []
    d = dst / "photos"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s, variant = int(sizes[i % 12]), i // 12
        shift = 8 * variant  # a different crop of the same photo for each variant
        img = rgb[shift:, shift:].astype(np.float32) * (1.0 - 0.15 * variant) + 10 * variant
        img = np.clip(img, 0, 255).astype(np.uint8)
        img = cv2.resize(np.ascontiguousarray(img), (s, int(s * 0.75)), interpolation=cv2.INTER_CUBIC)
        p = d / f"photo_{i:02d}_{s}px.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(str(p))
    return out


def _fer_items(n: int) -> list:
    """``n`` FER2013 train items (every k-th of the sorted tree)."""
    items = [it for it in list_source(str(DATA / "fer2013"), spec=load_spec("fer2013")).items if it.split == "train"]
    return items[:: max(1, len(items) // n)][:n]


def _worker_setup(mode: str, extra: tuple[str, ...] = ()) -> tuple:
    kw = {"second_look": True} if "--second-look" in extra else {}
    settings = PreprocessConfig(face=mode, **kw).cut_settings(pre_cropped=True)
    return settings, str(LandmarkModelFile.default().path)


def _chunked(items: list, settings, model: str, chunk: int = 64) -> None:
    for a in range(0, len(items), chunk):
        process_chunk(a, [(it, None) for it in items[a:a + chunk]], settings, model)


def profile(n: int, mode: str) -> None:
    """Where one worker's time goes: cProfile of `prepro.worker.process_chunk` on ``n`` FER2013
    train images in chunks of 64 (the default), one process, the models already loaded."""
    import cProfile
    import pstats

    items = _fer_items(n)
    settings, model = _worker_setup(mode)
    _chunked(items[:64], settings, model)  # load the models first
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    _chunked(items, settings, model)
    prof.disable()
    secs = time.perf_counter() - t0
    print(f"{mode}: {1000 * secs / len(items):.2f} ms an image in one process ({len(items)} images)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def budget(n: int, mode: str, repeats: int) -> dict:
    """Per image, one process, no profiler: the whole worker (decode to deflated blocks) against
    dlib's predictor alone, run on the same images from the same start boxes in the same loop;
    medians of ``repeats``. The issue's goal: everything but the predictor at most 15% of a call."""
    items = _fer_items(n)
    settings, model = _worker_setup(mode)
    _chunked(items[:64], settings, model)
    grays = [decode_gray(it.path).gray for it in items]
    rects = dlib_rects(estimate_start_boxes(grays, load_landmark_models()), grays)
    predictor = LandmarkModelFile.default().load()
    whole, alone = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _chunked(items, settings, model)
        whole.append((time.perf_counter() - t0) / len(items))
        t0 = time.perf_counter()
        for g, r in zip(grays, rects):
            predictor(g, r)
        alone.append((time.perf_counter() - t0) / len(items))
    w, a = statistics.median(whole), statistics.median(alone)
    out = {"mode": mode, "images": len(items), "worker_ms": 1e3 * w, "predictor_ms": 1e3 * a,
           "rest_ms": 1e3 * (w - a), "rest_share_of_a_call": (w - a) / a}
    print(f"{mode}: worker {out['worker_ms']:.2f} ms an image, predictor alone {out['predictor_ms']:.2f} ms, "
          f"the rest {out['rest_ms']:.2f} ms = {100 * out['rest_share_of_a_call']:.0f}% of a predictor call")
    return out


def driver_ceiling(shard_size: int, repeats: int) -> dict:
    """What the process that records the shards can keep up with, in samples/s: with joblib it
    writes every shard itself (`write_task_shard`: HDF5 of packed blocks, fsync, SHA-256, then the
    manifest), on Dask it only records the record a worker returns (`ShardRecorder.record`: the
    manifest). Real FER2013 blocks, packed as workers pack them; medians of ``repeats``."""
    items = _fer_items(shard_size)
    settings, model = _worker_setup("aligned")

    results = process_chunk(0, [(it, None) for it in items], settings, model)[1]
    out = Path(tempfile.mkdtemp(prefix="fb-driver-"))
    try:
        m = Manifest(params={}, source={}, label_names=["angry", "disgust", "fear", "happy", "sad", "surprise",
                                                         "neutral", "contempt"], split_names=["train", "val", "test"],
                     box_methods=["hog", "cnn", "estimated", "estimated_fallback", "given"],
                     block_sizes={"eyes": [16, 48], "mouth": [16, 32], "face": [48, 48]}, landmark_model={},
                     writer_id=new_writer_id())
        (out / SHARD_DIR).mkdir(parents=True)
        recorder = ShardRecorder(out, m)
        write_s, record_s = [], []
        for _ in range(repeats):
            task = plan_shards(out, m, items, shard_size)[0]
            t0 = time.perf_counter()
            outcome = write_task_shard(out, task, results, task_attrs(m, task), m.writer_id)
            write_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            recorder.record(outcome)
            record_s.append(time.perf_counter() - t0)
        w, r = statistics.median(write_s), statistics.median(record_s)
        res = {"shard_size": shard_size, "joblib_driver_samples_per_s": shard_size / (w + r),
               "dask_driver_samples_per_s": shard_size / r, "write_ms": 1e3 * w, "record_ms": 1e3 * r}
        print(f"shard of {shard_size}: writing it {res['write_ms']:.0f} ms, recording it {res['record_ms']:.1f} ms; "
              f"driver ceiling {res['joblib_driver_samples_per_s']:.0f} samples/s writing the shards itself (joblib), "
              f"{res['dask_driver_samples_per_s']:.0f} samples/s recording what the workers wrote (Dask)")
        return res
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["fer2013", "large", "profile", "budget", "driver"])
    ap.add_argument("--mode-profile", default="aligned", help="profile, budget: the face mode measured")
    ap.add_argument("--copies", type=int, default=1, help="large: copies of each photo (3 amortise start-up)")
    ap.add_argument("--images", type=int, default=3000, help="FER2013 train images (0 = all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--modes", default="aligned,auto",
                    help="comma list of face modes, each with optional +FLAG extras (aligned+--no-second-look)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    return ap.parse_args()


def _case_source(args: argparse.Namespace, work: Path) -> tuple[list[str], str, str, str | None]:
    """The images of the fer2013 or large case under ``work``: (paths, source, format, dataset)."""
    if args.case == "fer2013":
        if not (DATA / "fer2013").is_dir():
            sys.exit(f"needs {DATA / 'fer2013'}")
        paths = subset_folder(DATA / "fer2013", args.images, work / "src")
        return paths, str(work / "src"), "folder", "fer2013"
    paths = make_large_photos(work / "src")
    # Copies amortise the fixed start-up (workers, model loading) as a long run would.
    paths += [shutil.copyfile(p, p.replace(".jpg", f"_copy{k}.jpg")) for k in range(1, args.copies)
              for p in list(paths)]
    return paths, str(work / "src" / "photos"), "flat", None


def _compare(args: argparse.Namespace, predictor: str, paths: list[str], source: str, fmt: str,
             dataset: str | None) -> dict:
    """The reference loop (unless skipped) and each face mode of ``args.modes`` on the same images."""
    n = len(paths)
    results: dict = {"case": args.case, "images": n, "jobs": args.jobs, "cpus": os.cpu_count()}
    if not args.skip_reference:
        runs = [reference_loop(paths, predictor) for _ in range(args.repeats)]
        secs = statistics.median(r[0] for r in runs)
        results["reference"] = {"seconds": secs, "images_per_s": n / secs, "kept": runs[0][1],
                                "kept_frac": runs[0][1] / n}
        print(f"reference: {n / secs:8.1f} img/s  kept {runs[0][1]}/{n}", flush=True)
    for mode in args.modes.split(","):
        runs = [run_faceblocks(source, mode, args.jobs, fmt=fmt, dataset=dataset)
                for _ in range(args.repeats)]
        secs = statistics.median(r["seconds"] for r in runs)
        r = {"seconds": secs, "images_per_s": n / secs, "kept": runs[0]["samples"],
             "kept_frac": runs[0]["samples"] / n, "failed": runs[0]["failed"],
             "peak_rss_mb": max(x["peak_rss_mb"] for x in runs), "box_methods": runs[0]["box_methods"],
             "all_seconds": [round(x["seconds"], 2) for x in runs]}
        if "reference" in results:
            r["speedup"] = r["images_per_s"] / results["reference"]["images_per_s"]
        results[mode] = r
        print(f"{mode:>9}: {r['images_per_s']:8.1f} img/s  kept {r['kept']}/{n}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB" +
              (f"  speed-up x{r['speedup']:.2f}" if "speedup" in r else ""), flush=True)
    return results


def main() -> None:
    args = _arguments()
    predictor = str(LandmarkModelFile.default().path)
    if args.case == "profile":
        profile(args.images, args.mode_profile)
        return
    if args.case == "budget":
        budget(args.images, args.mode_profile, args.repeats)
        return
    if args.case == "driver":
        driver_ceiling(1024, args.repeats)
        return
    work = Path(tempfile.mkdtemp(prefix="fb-bench-src-"))
    try:
        results = _compare(args, predictor, *_case_source(args, work))
        print(json.dumps(results, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
