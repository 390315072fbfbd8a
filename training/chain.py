"""`faceblocks run CONFIG`: preprocess, train, evaluate and preview from one TOML file, into one folder.

The config has four tables, each optional but ``[data] source``::

    [run]        out            where everything goes (relative to the config file)
    [data]       source, format, dataset, face, block sizes and margins, splits, jobs  (= `preprocess`)
    [train]      every TrainConfig field: model, epochs, lr, labels, ...                (= `train`)
    [evaluate]   splits, tta_flip, tta_shift                                             (= `evaluate`)
    [preview]    count, seed

The folder holds ``config.toml`` (the config used, copied), ``shards/``, ``run/``,
``eval-<split>/``, ``preview.png`` and ``report.md``. A stage whose output is complete and valid
is skipped (shards verified against their checksums, a training run that ended, metrics of the
current best checkpoint); an interrupted stage resumes; a stage that had to run makes every later
stage run again. A config that differs from the one the folder was made with is refused unless
``overwrite``, which re-runs the stages of the changed tables and the stages that depend on them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prepro.config import PreprocessRun
from prepro.errors import EmptySplitError, FaceblocksError, InputError, OutputError
from prepro.outputs import atomic_write, atomic_write_text, is_empty_but_for_us, output_lock, sha256_file
from prepro.pipeline import run_preprocess
from prepro.preview import contact_sheet
from prepro.shards import Manifest, summarize
from training.chain_config import CONFIG_COPY, RESOLVED, ChainConfig, load_config
from training.config import TrainConfig, differing_fields
from training.run_folder import RunFolder
from training.run_records import best_text, stop_text

# ---------------------------------------------------------------------------------------------
# Running the stages


@dataclass
class StageRecord:
    name: str
    action: str  # "ran", "resumed", "skipped" or "noted"
    seconds: float
    detail: str = ""


@dataclass
class ChainResult:
    out_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> evaluate's metrics
    report: Path | None = None

    def lines(self) -> list[str]:
        """What `faceblocks run` says: a line per stage, the metrics per split, the report's path."""
        return ([f"{st.name:<11}{st.action:<9}{st.seconds:>8.1f} s  {st.detail}" for st in self.stages]
                + [f"{split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} ({m['n_samples']} samples)"
                   for split, m in self.metrics.items()]
                + [f"report: {self.report}"])


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(table, 'table.key: old -> new') for every value that differs."""
    out = []
    for table in new:
        for key in new[table]:
            a, b = old.get(table, {}).get(key), new[table][key]
            if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
                out.append((table, f"{table}.{key}: {a!r} -> {b!r}"))
    return out


def _train_finished(run: Path, cfg, shards_params: dict[str, Any]) -> str | None:
    """Why the training run in ``run`` cannot be kept as it is (None when it can)."""
    # imported here: torch loads on first use, not when this module is imported
    from training.checkpoint import load_checkpoint

    folder = RunFolder(run)
    try:
        result = folder.read_result()
        last = load_checkpoint(folder.last)
        best = load_checkpoint(folder.best)
        stored = TrainConfig.from_dict(best["config"])
    except (OSError, ValueError, FaceblocksError) as e:
        return f"no finished run ({str(e)[:120]})"
    if result["epochs_done"] != last["epoch"]:
        return "its result does not match last.pt"
    changed = differing_fields(stored, cfg, include_control=frozenset({"epochs", "max_minutes", "patience"}))
    if changed:
        return f"it was trained with other settings ({', '.join(changed)})"
    if best.get("preprocessing") != shards_params:
        return "it was trained on other shards"
    return None


def _open_out(cfg: ChainConfig, out: Path, overwrite: bool) -> tuple[dict[str, Any], set[str]]:
    """The resolved config values for ``out`` and the tables that changed since its last run."""
    values = json.loads(json.dumps(cfg.values))
    values["run"]["out"] = str(out)
    resolved = out / RESOLVED
    if not resolved.is_file():
        if not is_empty_but_for_us(out):
            raise OutputError(f"{out} is not empty and holds no `faceblocks run` output: choose a new or empty folder")
        return values, set()
    try:
        old = json.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    old = old if isinstance(old, dict) else {}
    diffs = [(t, d) for t, d in _differences(old, values) if t != "run"]
    if diffs and not overwrite:
        shown = "; ".join(d for _, d in diffs[:5]) + ("; ..." if len(diffs) > 5 else "")
        raise OutputError(f"{out} was made with another config ({shown}): pass --overwrite to redo the stages that "
                          "depend on it, or choose another --out")
    return values, {t for t, _ in diffs}


def run_chain(config_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, overwrite: bool = False,
              jobs: int | None = None, progress: bool = True,
              log: Callable[[str], None] = lambda msg: None) -> ChainResult:
    """Run the stages of ``config_path`` into ``out_dir`` (default: the config's ``run.out``)."""
    cfg = load_config(config_path)  # every value checked before any stage runs
    pcfg, tcfg = cfg.preprocess_config(), cfg.train_config()
    tcfg.progress = progress
    if out_dir is None and not cfg["run"]["out"]:
        raise InputError(f"{config_path}: say where the run goes with run.out or --out")
    out = Path(out_dir).resolve() if out_dir is not None else Path(cfg["run"]["out"])
    with output_lock(out):
        values, changed = _open_out(cfg, out, overwrite)
        config_bytes = Path(config_path).read_bytes()
        atomic_write(out / CONFIG_COPY, lambda f: f.write(config_bytes))
        atomic_write_text(out / RESOLVED, json.dumps(values, indent=1))
        result = ChainResult(out_dir=out)
        ran = _stage_preprocess(cfg, pcfg, out, changed, jobs, progress, log, result)
        shards_changed = ran
        manifest = Manifest.load(out / "shards")
        ran = _stage_train(tcfg, out, manifest.params, ran, changed, log, result) or ran
        _stage_evaluate(cfg, out, ran, changed, log, result)
        _stage_preview(cfg, out, shards_changed, changed, log, result)
        train_result = RunFolder(out / "run").read_result()
        result.report = write_report(out, cfg, result, manifest, train_result)
    return result


def _stage_preprocess(cfg: ChainConfig, pcfg, out: Path, changed: set[str], jobs: int | None, progress: bool,
                      log: Callable[[str], None], result: ChainResult) -> bool:
    """Preprocess (resumes by itself, rebuilds damaged shards); True when shards were written."""
    t0 = time.monotonic()
    redo = "data" in changed
    log("[1/4] preprocess" + (" (config changed: redoing)" if redo else ""))
    run = PreprocessRun(jobs=jobs if jobs is not None else cfg["data"]["jobs"], image_root=cfg["data"]["image_root"],
                        votes_file=cfg["data"]["votes_file"])
    summary = run_preprocess(cfg["data"]["source"], str(out / "shards"), pcfg, run, overwrite=redo,
                             progress=progress, log=log)
    ran = summary.written_now > 0 or redo
    result.stages.append(StageRecord("preprocess", "ran" if ran else "skipped", time.monotonic() - t0,
                                     f"{summary.samples} samples, {summary.failed} inputs not used"))
    log(f"preprocess: {result.stages[-1].action}, {result.stages[-1].detail}")
    return ran


def _stage_train(tcfg, out: Path, shards_params: dict[str, Any], ran: bool, changed: set[str],
                 log: Callable[[str], None], result: ChainResult) -> bool:
    """Train, resume a stopped run, or keep a finished one that fits; True when it trained."""
    # imported here: torch loads on first use, not when this module is imported
    from training.train import train

    t0 = time.monotonic()
    run, shards = out / "run", str(out / "shards")
    why = "earlier stage ran" if ran else ("config changed" if "train" in changed else
                                         _train_finished(run, tcfg, shards_params))
    action = "skipped"
    if why is not None:
        resumable = not ran and "train" not in changed and RunFolder(run).can_resume()
        action = "ran"
        if resumable:
            log(f"[2/4] train: resuming the stopped run in {run}")
            try:
                train(shards, str(run), tcfg, resume=True, log=log)
                action = "resumed"
            except FaceblocksError as e:
                log(f"cannot resume ({e}): training again")
                train(shards, str(run), tcfg, overwrite=True, log=log)
        else:
            log(f"[2/4] train {tcfg.model} in {run}" + (f" ({why})" if run.exists() else ""))
            train(shards, str(run), tcfg, overwrite=True, log=log)
    r = RunFolder(run).read_result()
    result.stages.append(StageRecord("train", action, time.monotonic() - t0,
                                     f"{r['epochs_done']} epochs, "
                                     f"{best_text(r['best_val_macro_f1'], r['best_epoch'])}"))
    log(f"train: {action}, {result.stages[-1].detail}")
    return action != "skipped"


def _stage_evaluate(cfg: ChainConfig, out: Path, ran: bool, changed: set[str], log: Callable[[str], None],
                    result: ChainResult) -> None:
    """Evaluate each split (skipped when metrics of this very checkpoint are there)."""
    # imported here: torch loads on first use, not when this module is imported
    from training.evaluate import evaluate, format_metrics_table, read_metrics

    t0 = time.monotonic()
    sha = sha256_file(RunFolder(out / "run").best)
    tta, shift = cfg["evaluate"]["tta_flip"], cfg["evaluate"]["tta_shift"]
    done, evaluated = [], False
    for split in cfg["evaluate"]["splits"]:
        ev = out / f"eval-{split}"
        old = read_metrics(ev / "metrics.json") or {}  # a record that is not evaluate's own is redone
        if (not ran and "evaluate" not in changed and old.get("checkpoint_sha256") == sha
                and old.get("tta_flip") == tta and old.get("tta_shift", False) == shift and old.get("split") == split):
            result.metrics[split] = old
            done.append(f"{split} skipped")
            continue
        log(f"[3/4] evaluate on {split}")
        try:
            result.metrics[split] = evaluate(str(out / "run"), str(out / "shards"), split=split, tta_flip=tta,
                                             tta_shift=shift, out_dir=ev)
        except EmptySplitError:
            _remove_stale_metrics(ev)
            done.append(f"{split}: no labelled samples")
            continue
        log(format_metrics_table(result.metrics[split]))
        done.append(f"{split} evaluated")
        evaluated = True
    result.stages.append(StageRecord("evaluate", "ran" if evaluated else "skipped", time.monotonic() - t0,
                                     ", ".join(done)))


def _remove_stale_metrics(ev: Path) -> None:
    """An earlier run's metrics of a split that is empty now: those three files are the chain's own."""
    for name in ("metrics.json", "confusion.json", "confusion.png"):
        (ev / name).unlink(missing_ok=True)


def _stage_preview(cfg: ChainConfig, out: Path, shards_changed: bool, changed: set[str],
                   log: Callable[[str], None], result: ChainResult) -> None:
    t0 = time.monotonic()
    sheet, manifest = out / "preview.png", out / "shards" / "manifest.json"
    if (not shards_changed and "preview" not in changed and sheet.is_file()
            and sheet.stat().st_mtime >= manifest.stat().st_mtime):
        result.stages.append(StageRecord("preview", "skipped", time.monotonic() - t0))
        return
    log("[4/4] preview")
    contact_sheet(out / "shards", sheet, count=cfg["preview"]["count"], seed=cfg["preview"]["seed"])
    result.stages.append(StageRecord("preview", "ran", time.monotonic() - t0))


# ---------------------------------------------------------------------------------------------
# report.md


def markdown_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _weight_text(w: float | None) -> str:
    return "-" if w is None else f"{w:.3f}"


def write_report(out: Path, cfg: ChainConfig, result: ChainResult, manifest, train_result: dict[str, Any]) -> Path:
    """A short Markdown report of the run's figures, with its pictures linked."""
    # imported here: torch loads on first use, not when this module is imported
    from architectures import count_params
    from training.checkpoint import build_model_from_checkpoint, load_checkpoint
    from training.evaluate import tta_words

    s = summarize(out / "shards")
    d, t = cfg["data"], cfg["train"]
    n_params = count_params(build_model_from_checkpoint(load_checkpoint(RunFolder(out / "run").best)))
    history = load_checkpoint(RunFolder(out / "run").last, for_resume=True)["history"]
    lines = [f"# faceblocks run: {cfg.path.name}", "",
             f"Config: [{CONFIG_COPY}]({CONFIG_COPY}) (a copy of {cfg.path}). "
             f"Written {time.strftime('%Y-%m-%d %H:%M')} by faceblocks {manifest.faceblocks_version}.", "",
             "## Data", "",
             f"Source `{d['source']}` ({manifest.source.get('format')}"
             + (f", dataset {manifest.source.get('dataset')}" if manifest.source.get("dataset") else "")
             + f"), face mode `{d['face']}`, blocks eyes {d['eyes_size'][0]}x{d['eyes_size'][1]}, "
             f"mouth {d['mouth_size'][0]}x{d['mouth_size'][1]}, face {d['face_size'][0]}x{d['face_size'][1]}.",
             "", f"{s['samples']} samples; {s['failed']} inputs could not be used"
             + (" (`faceblocks inspect shards` lists each with its reason)." if s["failed"] else "."), ""]
    splits = s.get("splits", {})
    labels = [lab for lab in manifest.label_names + ["unlabelled"] if any(lab in per for per in splits.values())]
    if splits and labels:
        lines += markdown_table(["split"] + labels + ["total"],
                           [[sp] + [per.get(lab, 0) for lab in labels] + [sum(per.values())]
                            for sp, per in splits.items()])
        lines.append("")
    lines += ["![contact sheet: faces with landmarks and block outlines, and the blocks](preview.png)", "",
              "## Training", "",
              f"`{t['model']}` ({n_params:,} parameters), {train_result['epochs_done']} epochs "
              f"({stop_text(train_result['stop_reason'])}) in {sum(float(r.get('seconds', 0)) for r in history):.0f} s; "
              f"{best_text(train_result['best_val_macro_f1'], train_result['best_epoch'])}.", "",
              "![training curves](run/curves.png)", "", "## Evaluation", ""]
    if not result.metrics:
        lines += ["No split was evaluated.", ""]
    for split, m in result.metrics.items():
        lines += [f"### {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                  f"({m['n_samples']} samples{tta_words(m).replace(' with', ',')})", ""]
        regions = m["regions"]
        rows = [[name, f"{pc['precision']:.3f}", f"{pc['recall']:.3f}", f"{pc['f1']:.3f}", pc["support"]]
                + [_weight_text(m["region_weights_per_class"].get(name, {}).get(r)) for r in regions]
                for name, pc in m["per_class"].items()]
        lines += markdown_table(["class", "precision", "recall", "F1", "support"] + [f"weight {r}" for r in regions],
                           rows)
        lines += ["", f"![confusion matrix on {split}](eval-{split}/confusion.png)", ""]
    lines += ["## Stages (this invocation)", ""]
    lines += markdown_table(["stage", "action", "seconds", "detail"],
                       [[r.name, r.action, f"{r.seconds:.1f}", r.detail] for r in result.stages])
    lines.append("")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
