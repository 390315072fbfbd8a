"""The parallel preprocessing pipeline: a source listing in, a resumable shard folder out.

Items are put in one deterministic order (split, then the reader's order) and processed in
chunks by joblib workers; each worker loads the dlib models once. Results come back in order, so
the shards are the same whatever the number of jobs. A shard is written as soon as it is full, and
the manifest records which items it accounts for (samples and failures), so a killed run resumes
after the last finished shard with nothing lost or doubled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from prepro.blocks import BlockConfig
from prepro.labels import CANONICAL_LABELS
from prepro.landmarks import FACE_MODES
from prepro.shards import (MANIFEST, SHARD_DIR, SPLITS, Manifest, Sample, Segment, pack_block,
                           sha256_file, shard_attrs, write_shard)


class PreprocessError(Exception):
    """A run that cannot start or continue as asked; the message says what to do."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that changes what `preprocess` writes (jobs, backend and progress bars do not)."""

    fmt: str = "auto"  # reader format, or "auto" to detect it
    dataset: str | None = None  # dataset description name (datasets/*.toml) or path; None = none
    face_mode: str = "auto"  # auto | detect | aligned
    blocks: BlockConfig = field(default_factory=BlockConfig)  # block geometry and sizes
    shard_size: int = 1024  # samples per shard (the last shard of a split may be short)
    max_pixels: int = 40_000_000  # images whose header claims more pixels are refused undecoded
    work_max_side: int = 1024  # large JPEGs are decoded reduced, but never below this longest side
    detect_max_side: int = 640  # the detector runs on a copy downscaled to this longest side
    val_frac: float = 0.1  # for sources without splits: fraction of items put in `val`
    test_frac: float = 0.1  # ... and in `test`
    split_seed: int = 0  # seed of that split
    split_by_subject: bool = False  # keep each subject in one split (CK+, JAFFE, FERG)
    limit: int | None = None  # process only the first N items (after ordering); None = all

    def __post_init__(self) -> None:
        if self.face_mode not in FACE_MODES:
            raise ValueError(f"face mode {self.face_mode!r} is not one of {', '.join(FACE_MODES)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = self.blocks.to_dict()
        return json.loads(json.dumps(d))  # tuples -> lists, so a reloaded manifest compares equal


@dataclass
class RunSummary:
    out_dir: str
    samples: int  # samples in the folder after this run
    failed: int  # items listed as failures
    items: int  # items found in the source (samples + failures, when complete)
    written_now: int  # samples written by this run (0 when everything was already done)
    complete: bool
    seconds: float
    failure_reasons: dict[str, int]  # reason category -> count


# ---------------------------------------------------------------------------------------------
# Worker side: runs in joblib worker processes; the models are loaded once per process.

_WORKER_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class _WorkerSettings:
    predictor: str
    face_mode: str
    pre_cropped: bool
    blocks: BlockConfig
    max_pixels: int
    work_max_side: int
    detect_max_side: int


def _face_model(s: _WorkerSettings):
    from prepro.landmarks import FaceModel

    key = repr((s.predictor, s.face_mode, s.pre_cropped, s.detect_max_side))
    model = _WORKER_CACHE.get(key)
    if model is None:
        model = _WORKER_CACHE[key] = FaceModel(s.predictor, face_mode=s.face_mode,
                                               pre_cropped=s.pre_cropped,
                                               detect_max_side=s.detect_max_side)
    return model


def _process_one(item, pixels: str | tuple[str, str] | None, s: _WorkerSettings, model) -> Sample | tuple[str, str]:
    from prepro.blocks import BlockError, cut_blocks
    from prepro.image_io import ImageDecodeError, decode_gray
    from prepro.landmarks import BOX_METHODS, NoFaceError
    from prepro.readers import BadPixelsError, parse_pixels

    try:
        if isinstance(pixels, tuple):  # the row could not be read by the main process
            return (item.source_id, pixels[1])
        if pixels is not None:
            gray, scale = parse_pixels(pixels), 1.0
            size = gray.shape
        else:
            gray, scale, size = decode_gray(item.path, max_pixels=s.max_pixels,
                                            work_max_side=s.work_max_side)
        face = model.find(gray, scale)
        blk = cut_blocks(gray, face.landmarks, s.blocks, scale)
    except (ImageDecodeError, BadPixelsError, NoFaceError, BlockError) as e:
        return (item.source_id, str(e))
    except OSError as e:
        return (item.source_id, f"unreadable file ({e.strerror or e})")
    except Exception as e:  # one strange file must never end a long run: list it and go on
        return (item.source_id, f"unexpected error {type(e).__name__}: {e}")
    return Sample(
        # deflated here, in the worker, so that compression runs in parallel
        eyes=pack_block(blk.eyes), mouth=pack_block(blk.mouth), face=pack_block(blk.face),
        landmarks=face.landmarks, box=face.box,
        eyes_affine=blk.eyes_affine, mouth_affine=blk.mouth_affine, face_affine=blk.face_affine,
        label=CANONICAL_LABELS.index(item.label) if item.label is not None else -1,
        split=SPLITS.index(item.split), source=item.source_id, subject=item.subject or "",
        box_method=BOX_METHODS.index(face.method), det_score=face.det_score,
        quality=face.quality, image_size=tuple(size),
    )


def process_chunk(payload: list[tuple[Any, str | None]], s: _WorkerSettings) -> list:
    """Process (item, csv pixels or None) pairs; returns a Sample or (source, reason) per item."""
    model = _face_model(s)
    return [_process_one(item, pixels, s, model) for item, pixels in payload]


# ---------------------------------------------------------------------------------------------
# Main side


def _order_items(items: list) -> list:
    rank = {s: i for i, s in enumerate(SPLITS)}
    # A stable sort keeps the reader's deterministic order within each split.
    return sorted(items, key=lambda it: rank[it.split])


def _fingerprint(items: list) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.source_id}\t{it.label}\t{it.split}\t{it.subject}\n".encode("utf-8"))
    return h.hexdigest()


def _jsonable(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif _jsonable(a) != _jsonable(b):
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _prepare_out_dir(out: Path, fresh: Manifest, overwrite: bool) -> Manifest:
    """Return the manifest to continue from: the folder's own when it matches, else ``fresh``."""
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = None
        try:
            old = Manifest.load(out)
        except Exception as e:
            if not overwrite:
                raise PreprocessError(f"{out}: {e}") from e
        if old is not None:
            diffs = _differences(old.params, fresh.params)
            if old.source.get("fingerprint") != fresh.source["fingerprint"]:
                diffs.append("the source's items (files added, removed or relabelled)")
            if old.predictor_sha256 != fresh.predictor_sha256:
                diffs.append("the landmark predictor file")
            if not diffs:
                _remove_orphans(out, old)
                return old
            if not overwrite:
                raise PreprocessError(
                    f"{out} already holds a run with other settings ({'; '.join(diffs[:4])}"
                    f"{'; ...' if len(diffs) > 4 else ''}): pass --overwrite to replace it, "
                    "or choose another output folder")
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        manifest_path.unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PreprocessError(f"{out} is not empty and holds no faceblocks run: choose an empty "
                                  "or new folder, or pass --overwrite to write into it")
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    fresh.save(out)
    return fresh


def _remove_orphans(out: Path, m: Manifest) -> None:
    """Drop files a killed run left behind: temporary shards and shards the manifest never got."""
    keep = {seg.file for seg in m.shard_segments()}
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(exist_ok=True)
    for p in shard_dir.iterdir():
        if f"{SHARD_DIR}/{p.name}" not in keep:
            p.unlink()
    for p in out.glob(MANIFEST + ".*.tmp"):
        p.unlink()


def failure_category(reason: str) -> str:
    """A short category for the summary table ("no face found", "truncated image data", ...)."""
    head = reason.split("(")[0].split(":")[0].strip()
    return head or reason


def run_preprocess(
    source: str,
    out_dir: str,
    cfg: PreprocessConfig = PreprocessConfig(),
    *,
    jobs: int = 1,
    backend: str | None = None,
    chunk_size: int = 64,
    predictor: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> RunSummary:
    """Turn ``source`` into shards in ``out_dir``; resume when ``out_dir`` holds the same run."""
    from joblib import Parallel, delayed, parallel_config
    from tqdm import tqdm

    from prepro.landmarks import BOX_METHODS, find_predictor
    from prepro.readers import (BadPixelsError, CsvRowReader, assign_splits, count_mismatches,
                                list_source)
    from prepro.specs import load_spec

    t0 = time.perf_counter()
    out = Path(out_dir)
    spec = load_spec(cfg.dataset) if cfg.dataset else None
    predictor_path = find_predictor(predictor)

    listing = list_source(source, cfg.fmt, spec=spec)
    spec = listing.spec  # the description actually used (the CSV reader picks its own by default)
    for message in count_mismatches(listing.items, spec):
        log(f"note: {message} (a partial copy of the dataset?)")
    items = listing.items
    if any(it.split is None for it in items):
        items = assign_splits(items, val_frac=cfg.val_frac, test_frac=cfg.test_frac,
                              seed=cfg.split_seed, by_subject=cfg.split_by_subject)
    items = _order_items(items)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    fresh = Manifest(
        params=cfg.to_dict(),
        source={"path": str(Path(source).resolve()), "format": listing.format,
                "dataset": spec.name if spec else None, "n_items": len(items),
                "fingerprint": _fingerprint(items)},
        label_names=list(CANONICAL_LABELS),
        split_names=list(SPLITS),
        box_methods=list(BOX_METHODS),
        block_sizes={"eyes": list(cfg.blocks.eyes_size), "mouth": list(cfg.blocks.mouth_size),
                     "face": list(cfg.blocks.face_size)},
        predictor_sha256=_cached_sha256(predictor_path),
        n_items=len(items),
        listing_failures=[{"source": f.source, "reason": f.reason} for f in listing.failures],
    )
    manifest = _prepare_out_dir(out, fresh, overwrite)
    start = manifest.next_item
    if start:
        log(f"resuming: {manifest.n_samples} samples in {len(manifest.shard_segments())} finished "
            f"shards; {len(items) - start} of {len(items)} items left")
    settings = _WorkerSettings(
        predictor=str(predictor_path), face_mode=cfg.face_mode,
        pre_cropped=bool(spec.pre_cropped) if spec else False, blocks=cfg.blocks,
        max_pixels=cfg.max_pixels, work_max_side=cfg.work_max_side,
        detect_max_side=cfg.detect_max_side)

    csv = CsvRowReader()

    def csv_pixels(it) -> str | tuple[str, str]:
        try:
            return csv.pixels(it.path, it.offset)
        except (BadPixelsError, OSError, EOFError) as e:  # e.g. a .gz cut short after listing
            return ("error", str(e))

    def chunks() -> Iterator[tuple[int, list]]:
        for a in range(start, len(items), chunk_size):
            part = items[a:a + chunk_size]
            yield a, [(it, csv_pixels(it) if it.offset >= 0 else None) for it in part]

    n_jobs = os.cpu_count() if jobs == -1 else jobs
    if n_jobs is None or n_jobs < 1:
        raise PreprocessError(f"--jobs must be -1 (all cores) or a positive number, got {jobs}")

    written_now = 0
    buf: list[Sample] = []
    fails: list[dict[str, str]] = []
    seg_start = start
    seg_split = items[start].split if start < len(items) else None
    shard_counts = {s: len(manifest.shard_segments(s)) for s in SPLITS}

    def flush(end: int) -> None:
        nonlocal buf, fails, seg_start, written_now
        if end <= seg_start:
            return
        file = digest = None
        if buf:
            name = f"{seg_split}-{shard_counts[seg_split]:05d}.h5"
            file = f"{SHARD_DIR}/{name}"
            digest = write_shard(out / file, buf, shard_attrs(manifest, seg_split, shard_counts[seg_split]))
            shard_counts[seg_split] += 1
        manifest.segments.append(Segment(start=seg_start, end=end, split=seg_split, file=file,
                                         n_samples=len(buf), sha256=digest, failures=fails))
        manifest.save(out)
        written_now += len(buf)
        buf, fails, seg_start = [], [], end

    bar = tqdm(total=len(items), initial=start, unit="img", disable=not progress, smoothing=0.05,
               dynamic_ncols=True)
    tasks = (delayed(_run_chunk)(a, payload, settings) for a, payload in chunks())
    try:
        # Only name a backend when asked: a surrounding `parallel_config` (e.g. dask) then applies.
        config = {"backend": backend} if backend else {}
        with parallel_config(n_jobs=n_jobs, **config):
            results = Parallel(return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)(tasks)
            for a, outputs in results:
                for k, res in enumerate(outputs):
                    i = a + k
                    if items[i].split != seg_split:
                        flush(i)
                        seg_split = items[i].split
                    if isinstance(res, Sample):
                        buf.append(res)
                    else:
                        fails.append({"source": res[0], "reason": res[1]})
                    if len(buf) >= cfg.shard_size:
                        flush(i + 1)
                bar.update(len(outputs))
        flush(len(items))
    finally:
        bar.close()
        csv.close()

    failures = manifest.failures
    cats: dict[str, int] = {}
    for f in failures:
        c = failure_category(f["reason"])
        cats[c] = cats.get(c, 0) + 1
    return RunSummary(out_dir=str(out), samples=manifest.n_samples, failed=len(failures),
                      items=manifest.n_items + len(manifest.listing_failures),
                      written_now=written_now, complete=manifest.complete,
                      seconds=time.perf_counter() - t0,
                      failure_reasons=dict(sorted(cats.items(), key=lambda kv: -kv[1])))


def _run_chunk(start: int, payload: list, settings: _WorkerSettings) -> tuple[int, list]:
    return start, process_chunk(payload, settings)


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """The predictor's SHA-256, hashed once per process (it is ~100 MB)."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]
