"""`preprocess`: a source listing in, a resumable, growable shard folder out.

The roles, one module each: `prepro.readers` lists the source, `prepro.worker` turns items into
samples or failures, `prepro.distributor` runs the workers and returns their results in order,
`prepro.writer` writes shards and the manifest. This module decides what is to be done:

* a new folder: every listed item, in one deterministic order (split, then the reader's order);
* the same settings again: only the items the folder does not yet account for (as a sample or a
  failure). After a crash those are the items after the last finished shard, so the result is the
  same as an uninterrupted run's; when the source gained files, the new ones are added in new
  shards; files that disappeared from the source are reported (their samples stay);
  ``retry_failed`` puts the listed failures back in the queue. Finished shards are never rewritten;
* other settings: refused, or with ``overwrite`` the files the old run provably wrote are removed
  first (see `prepro.outputs`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.cut_settings import NET_LANDMARKS
from prepro.distributor import DEFAULT_BACKEND, connect_dask, lowered_jobs_note, run_in_order
from prepro.errors import OutputError
from prepro.faces import BOX_METHODS
from prepro.inputs import is_inside
from prepro.labels import CANONICAL_LABELS
from prepro.landmark_net import NET_FILE
from prepro.manifest import MANIFEST, SHARD_DIR, Manifest
from prepro.model_files import LANDMARK_MODEL_TERMS, LandmarkModelFile
from prepro.outputs import is_empty_but_for_us, new_writer_id, output_lock, remove_own_temp_files, sha256_file
from prepro.readers import BadPixelsError, CsvRowReader, Failure, RawItem, count_mismatches, list_source
from prepro.shards import check_shard, shard_writer_id
from prepro.specs import SPLITS, load_spec
from prepro.splits import assign_splits, order_key
from prepro.worker import load_models, process_chunk, process_shard_task
from prepro.writer import ShardRecorder, plan_shards, task_attrs, write_task_shard

Log = Callable[[str], None]


@dataclass
class RunSummary:
    out_dir: str
    samples: int  # samples in the folder after this run
    failed: int  # inputs listed as failures
    items: int  # inputs the folder accounts for (samples + failures)
    written_now: int  # samples written by this run (0 when everything was already done)
    new_items: int  # inputs this run processed (new, resumed or retried)
    missing: int  # inputs of earlier runs that are no longer in the source
    complete: bool
    seconds: float
    failure_reasons: dict[str, int]  # reason category -> count

    def report(self) -> list[str]:
        """What `faceblocks preprocess` says of the run: the counts, the commonest failure reasons."""
        rate = self.written_now / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.samples} samples in {self.out_dir}; {self.failed} of {self.items} inputs could not be "
                 f"used; {self.written_now} written now in {self.seconds:.1f} s ({rate:.0f} images/s)"]
        lines += [f"  {count:>7}  {reason}" for reason, count in list(self.failure_reasons.items())[:8]]
        if self.failed:
            lines.append(f"every failure is listed by `faceblocks inspect {self.out_dir}`")
        return lines


@dataclass
class _Plan:
    pending: list[RawItem]  # to process now, in order
    fingerprint: str  # of the current listing
    missing: list[str]
    changed: int  # accounted inputs whose label or split in the source changed since
    rewritten: list[str] = field(default_factory=list)  # accounted inputs whose file is newer than the manifest


def failure_category(reason: str) -> str:
    """A short category for the summary table ("no face found", "truncated image data", ...)."""
    head = reason.split("(")[0].split(":")[0].strip()
    return head or reason


def _check_out_apart(source: Path, out: Path) -> None:
    """Refuse an output folder that is a source folder or lies inside it: on the next run its own
    files (shards, a contact sheet) would be listed as inputs."""
    if source.is_dir() and is_inside(out, source):
        raise OutputError(f"the output folder {out} is the source folder {source} or lies inside it: its files "
                          "would be read as inputs next time; choose a folder outside the source")


def run_preprocess(source: str, out_dir: str, cfg: PreprocessConfig = PreprocessConfig(),
                   run: PreprocessRun = PreprocessRun(), *, overwrite: bool = False, retry_failed: bool = False,
                   progress: bool = True, log: Log = lambda msg: None) -> RunSummary:
    """Turn ``source`` into shards in ``out_dir`` (see the module doc for resume, growth, overwrite)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    _check_out_apart(Path(source), out)
    landmark = LandmarkModelFile.find(run.landmark_model)
    if run.landmark_model is not None:
        # A user's file that is no landmark model is one clear error before any work. (The shipped
        # one is loaded by the workers only: loading it here too would cost a second a run.)
        landmark.load()
    spec = load_spec(cfg.dataset) if cfg.dataset else None
    listing = list_source(source, cfg.format, spec=spec, image_root=run.image_root, votes_file=run.votes_file)
    for message in count_mismatches(listing.items, listing.spec):
        log(f"note: {message} (a partial copy of the dataset?)")
    if run.scheduler:
        connect_dask(run.scheduler)
    with output_lock(out):
        manifest = _open_folder(out, _fresh_manifest(cfg, listing, landmark), overwrite, log)
        plan = _plan(out, manifest, listing, cfg, retry_failed)
        _report_plan(plan, manifest, log)
        manifest.source = {**manifest.source, "path": str(Path(source).resolve()), "n_items": len(listing.items),
                           "fingerprint": plan.fingerprint}
        manifest.listing_failures = [{"source": f.source, "reason": f.reason} for f in listing.failures]
        manifest.missing = plan.missing
        manifest.complete = not plan.pending
        if plan.pending:
            manifest.save(out)  # "incomplete" on disk before any work, in case the run is killed
        written = _process(out, manifest, plan.pending, cfg, run, landmark, listing.spec, progress, log)
        manifest.complete = True
        if manifest.to_dict() != Manifest.load(out).to_dict():
            manifest.save(out)  # saved only when something changed: its time stamp says when
    cats: dict[str, int] = {}
    for f in manifest.all_failures:
        cats[failure_category(f["reason"])] = cats.get(failure_category(f["reason"]), 0) + 1
    return RunSummary(out_dir=str(out), samples=manifest.n_samples, failed=len(manifest.all_failures),
                      items=manifest.n_samples + len(manifest.all_failures), written_now=written,
                      new_items=len(plan.pending), missing=len(plan.missing), complete=manifest.complete,
                      seconds=time.perf_counter() - t0,
                      failure_reasons=dict(sorted(cats.items(), key=lambda kv: -kv[1])))


# ---------------------------------------------------------------------------------------------
# The folder


def _fresh_manifest(cfg: PreprocessConfig, listing, landmark) -> Manifest:
    return Manifest(
        params=cfg.to_dict(),
        source={"path": listing.root, "format": listing.format,
                "dataset": listing.spec.name if listing.spec else None, "n_items": len(listing.items),
                "fingerprint": ""},
        label_names=list(CANONICAL_LABELS), split_names=list(SPLITS), box_methods=list(BOX_METHODS),
        block_sizes={"eyes": list(cfg.blocks.eyes_size), "mouth": list(cfg.blocks.mouth_size),
                     "face": list(cfg.blocks.face_size)},
        landmark_model=_landmark_record(cfg, landmark), writer_id=new_writer_id())


def _landmark_record(cfg: PreprocessConfig, landmark) -> dict:
    """Which landmark model cuts the shards: dlib's file, and with `--landmarks net` or `net-fast` the
    network distilled from it (its terms are dlib's)."""
    record = {"file": landmark.path.name, "sha256": _cached_sha256(landmark.path), "terms": LANDMARK_MODEL_TERMS}
    if cfg.landmarks in NET_LANDMARKS:
        record["net"] = {"file": NET_FILE.name, "sha256": _cached_sha256(NET_FILE)}
    return record


def _open_folder(out: Path, fresh: Manifest, overwrite: bool, log: Log) -> Manifest:
    """The manifest to continue from: the folder's own when its settings match, else ``fresh``."""
    if (out / MANIFEST).exists():
        old = Manifest.load(out)  # a manifest faceblocks cannot read: it cannot tell what it wrote there
        _make_shard_folder(out)
        # Folders cut before `--landmarks` existed were cut by dlib's predictor.
        diffs = _differences({"landmarks": "dlib", **old.params}, fresh.params)
        if old.landmark_model.get("sha256") != fresh.landmark_model["sha256"]:
            diffs.append("the landmark model file")
        if old.landmark_model.get("net") != fresh.landmark_model.get("net"):
            diffs.append("the landmark network file")
        if not diffs:
            _remove_leftovers(out, old)
            _drop_damaged(out, old, log)
            return old
        if not overwrite:
            raise OutputError(f"{out} already holds a run with other settings ({'; '.join(diffs[:4])}"
                              f"{'; ...' if len(diffs) > 4 else ''}): pass --overwrite to replace it, "
                              "or choose another output folder")
        kept = _remove_run(out, old)
        log(f"replacing the run in {out}" + (f"; left alone (not provably written by it): {', '.join(kept[:5])}"
                                             if kept else ""))
    elif not is_empty_but_for_us(out) and not overwrite:
        raise OutputError(f"{out} is not empty and holds no faceblocks run: choose an empty or new folder, or "
                          "pass --overwrite to write into it beside those files (none of them is removed)")
    _make_shard_folder(out)
    fresh.save(out)
    return fresh


def _make_shard_folder(out: Path) -> None:
    """Make ``OUT/shards`` if it is missing; refuse one that is a file (the user's, never replaced)
    or a link (shards would be written into another folder)."""
    shard_dir = out / SHARD_DIR
    if shard_dir.is_symlink():
        raise OutputError(f"{shard_dir} is a symbolic link: shards are written only into the folder itself; "
                          "move the link away")
    try:
        shard_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{shard_dir} exists and is not a folder: move it away") from None
    except OSError as e:
        raise OutputError(f"cannot create {shard_dir} ({e.strerror or e})") from None


def _remove_leftovers(out: Path, m: Manifest) -> None:
    """Temporary files and unlisted shards a killed run of this folder left (provably its own)."""
    shard_dir = out / SHARD_DIR
    remove_own_temp_files(shard_dir, m.writer_id)
    remove_own_temp_files(out, m.writer_id)  # the manifest's and failure files' (a run killed saving them)
    listed = {r.file for r in m.shards}
    for p in (shard_dir.iterdir() if shard_dir.is_dir() else ()):
        if (f"{SHARD_DIR}/{p.name}" not in listed and p.suffix == ".h5" and p.is_file() and not p.is_symlink()
                and shard_writer_id(p) == m.writer_id):
            p.unlink()


def _drop_damaged(out: Path, m: Manifest, log: Log) -> None:
    """Shards that are missing or damaged are dropped from the manifest, so that their inputs are
    processed again; a damaged file is removed only when it still carries this folder's writer id."""
    dropped = False
    for rec in list(m.shards):
        why = check_shard(out, rec, m)
        if why is None:
            continue
        dropped = True
        path = out / rec.file
        own = path.is_file() and not path.is_symlink() and shard_writer_id(path) == m.writer_id
        if own:
            path.unlink()
        m.shards.remove(rec)
        m.complete = False
        log(f"{rec.file} is {why}: its {rec.n_samples} samples are made again"
            + ("" if own or not path.exists() else " (the file cannot be proved to be this folder's own: it is "
                                                    "left where it is, and the new shard takes another name)"))
    if dropped:
        m.save(out)


def _remove_run(out: Path, old: Manifest) -> list[str]:
    """Remove what the old run provably wrote (listed shards with their checksum, its leftovers);
    returns the listed files left alone because they changed since."""
    _remove_leftovers(out, old)
    kept = []
    for rec in old.shards:
        path = out / rec.file
        if path.is_file() and not path.is_symlink() and check_shard(out, rec, old) is None:
            path.unlink()
        elif path.exists():
            kept.append(rec.file)
    return kept


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    import json

    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


# ---------------------------------------------------------------------------------------------
# What to do


def _fingerprint(items: list[RawItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        # annotations only when there are some, so that the fingerprints of other sources stay as they were
        extra = f"\t{it.annotations}" if it.annotations else ""
        h.update(f"{it.source_id}\t{it.label}\t{it.split}\t{it.subject}\t{it.box}{extra}\n".encode("utf-8"))
    return h.hexdigest()


def _accounted(out: Path, m: Manifest) -> dict[str, tuple[str | None, str | None, str | None]]:
    """source id -> (split, subject, label) of every input the folder already accounts for."""
    import h5py

    done: dict[str, tuple[str | None, str | None, str | None]] = {}
    for rec in m.shards:
        with h5py.File(out / rec.file, "r") as f:
            sources = f["source"].asstr()[()]
            subjects = f["subject"].asstr()[()]
            labels = f["label"][()]
        for s, subj, lab in zip(sources, subjects, labels):
            done[s] = (rec.split, subj or None, m.label_names[lab] if lab >= 0 else None)
    for f in m.failures:
        done[f["source"]] = (f.get("split"), None, None)
    return done


def _plan(out: Path, m: Manifest, listing, cfg: PreprocessConfig, retry_failed: bool) -> _Plan:
    items = listing.items
    fingerprint = _fingerprint(items)
    if retry_failed:
        m.failures = []  # every processing failure is tried again
    done = _accounted(out, m)
    same_listing = fingerprint == m.source.get("fingerprint")
    if any(it.split is None for it in items):
        if same_listing or not done:
            # The split the first run gave: a resumed run writes exactly what an uninterrupted one would.
            items = _split(items, cfg, assign_splits)
        else:  # a grown source: earlier inputs keep their splits, new ones are split among themselves
            items = _split([replace(it, split=done[it.source_id][0]) if it.source_id in done else it
                            for it in items], cfg, assign_splits)
    items = sorted(items, key=order_key)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    ids = {it.source_id for it in items}
    changed = sum(1 for it in items if it.source_id in done and done[it.source_id][2] is not None
                  and done[it.source_id][2] != it.label)
    return _Plan(pending=[it for it in items if it.source_id not in done], fingerprint=fingerprint,
                 missing=sorted(s for s in done if s not in ids), changed=changed,
                 rewritten=_rewritten(out, [it for it in items if it.source_id in done]))


def _split(items: list[RawItem], cfg: PreprocessConfig, assign_splits) -> list[RawItem]:
    return assign_splits(items, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed,
                         by_subject=cfg.split_by_subject)


def _rewritten(out: Path, done_items: list[RawItem]) -> list[str]:
    """Source ids of processed inputs whose file was modified after the manifest was last saved:
    their samples hold the old content (one stat each; a CSV source counts once per row)."""
    try:
        saved = (out / MANIFEST).stat().st_mtime
    except OSError:
        return []
    newer: dict[str, bool] = {}
    for it in done_items:
        if it.path not in newer:
            try:
                newer[it.path] = os.stat(it.path).st_mtime > saved
            except OSError:
                newer[it.path] = False
    return [it.source_id for it in done_items if newer[it.path]]


def _moved(plan: _Plan) -> list[tuple[str, str]]:
    """(gone, new) source ids with the same file name: likely one file moved between folders."""
    name = lambda source_id: source_id.rsplit("/", 1)[-1]  # noqa: E731
    gone = {name(s): s for s in plan.missing if "/" in s and ":" not in s}
    return [(gone[name(it.source_id)], it.source_id) for it in plan.pending
            if "/" in it.source_id and name(it.source_id) in gone]


def _report_plan(plan: _Plan, m: Manifest, log: Log) -> None:
    if m.shards or m.failures:
        log(f"continuing: {m.n_samples} samples in {len(m.shards)} finished shards; "
            f"{len(plan.pending)} inputs to do")
    if plan.missing:
        log(f"note: {len(plan.missing)} inputs of earlier runs are no longer in the source (e.g. "
            f"{plan.missing[0]}); their samples stay in the shards")
    if plan.changed:
        log(f"note: {plan.changed} inputs changed label in the source since they were processed; their samples "
            "keep the old label (--overwrite redoes everything)")
    if plan.rewritten:
        log(f"note: {len(plan.rewritten)} processed inputs were modified since this folder was last written (e.g. "
            f"{plan.rewritten[0]}); their samples hold the old content: --overwrite rebuilds from the source")
    moved = _moved(plan)
    if moved:
        old, new = moved[0]
        log(f"note: {len(moved)} inputs seem to have moved in the source (e.g. {old} is gone and {new} is new): "
            "if so, the old sample stays in the shards with its old label beside the new one; --overwrite "
            "rebuilds the folder from the source as it is")


# ---------------------------------------------------------------------------------------------
# Doing it


def _process(out: Path, m: Manifest, pending: list[RawItem], cfg: PreprocessConfig, run: PreprocessRun,
             landmark, spec, progress: bool, log: Log) -> int:
    """Run the workers over ``pending`` and record their shards; returns the samples written."""
    from tqdm import tqdm

    settings = cfg.cut_settings(pre_cropped=bool(spec.pre_cropped) if spec else False)
    recorder = ShardRecorder(out, m)
    tasks = plan_shards(out, m, pending, cfg.shard_size)
    n_chunks = sum(-(-len(t.items) // run.chunk_size) for t in tasks)
    on_dask = run.scheduler or run.backend == "dask"
    if not on_dask and tasks:
        note = lowered_jobs_note(run.jobs, n_chunks)
        if note:
            log(note)
    outcomes = (_outcomes_on_dask(out, m, tasks, settings, landmark, run) if on_dask
                else _outcomes_on_joblib(out, m, tasks, settings, landmark, run, n_chunks))
    with tqdm(total=len(pending), unit="img", disable=not progress, smoothing=0.05, dynamic_ncols=True) as bar:
        for outcome in outcomes:
            recorder.record(outcome)
            bar.update(outcome.n_items)
    return recorder.written


def _outcomes_on_joblib(out: Path, m: Manifest, tasks: list, settings, landmark, run: PreprocessRun,
                        n_chunks: int) -> Iterator:
    """Workers cut chunks of ``run.chunk_size`` images; this process writes each task's shard once
    its chunks are back (small chunks keep every worker busy however few the tasks)."""
    from joblib import delayed

    def before_fork() -> None:
        # The cutter of these settings, its models loaded, for the forked workers to share. (In a
        # thread while the source is listed it saves nothing: dlib's loader keeps the GIL.)
        load_models(settings, str(landmark.path))

    jobs = (delayed(process_chunk)(k, payload, settings, str(landmark.path))
            for k, task in enumerate(tasks) for payload in _payloads(task.items, run.chunk_size))
    done: dict[int, list] = {}
    k = 0
    for task_no, results in run_in_order(jobs, run.jobs, run.backend or DEFAULT_BACKEND, n_chunks,
                                         before_fork=before_fork):
        done.setdefault(task_no, []).extend(results)
        while k < len(tasks) and len(done.get(k, ())) == len(tasks[k].items):
            yield write_task_shard(out, tasks[k], done.pop(k), task_attrs(m, tasks[k]), m.writer_id)
            k += 1


def _outcomes_on_dask(out: Path, m: Manifest, tasks: list, settings, landmark, run: PreprocessRun) -> Iterator:
    """Each Dask task cuts one shard task's images and writes its shard itself (the output folder
    must be reachable by the workers); only the outcomes come back."""
    from joblib import delayed

    jobs = (delayed(process_shard_task)(str(out), task, next(_payloads(task.items, len(task.items))),
                                        task_attrs(m, task), m.writer_id, settings, str(landmark.path),
                                        run.chunk_size)
            for task in tasks)
    yield from run_in_order(jobs, run.jobs, "dask")


def _payloads(items: list[RawItem], size: int) -> Iterator[list[tuple[RawItem, Any]]]:
    """[(item, CSV pixel text, or a Failure, or None for an image file)] per chunk of ``size``;
    CSV rows are read here, in order, so that a gzip stream is only ever read forwards (the workers
    parse the text)."""
    with CsvRowReader() as csv:
        for a in range(0, len(items), size):
            payload = []
            for it in items[a:a + size]:
                pixels: Any = None
                if it.offset >= 0:
                    try:
                        pixels = csv.pixels(it.path, it.offset)
                    except BadPixelsError as e:
                        pixels = Failure(it.source_id, str(e))
                payload.append((it, pixels))
            yield payload


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """The landmark model's SHA-256, hashed once per process (it is ~100 MB)."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]
