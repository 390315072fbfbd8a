"""`faceblocks run CONFIG`: preprocess, train, evaluate and preview from one TOML file, into one folder.

The config has four tables, each optional but ``[data] source``::

    [run]        out            where everything goes (relative to the config file)
    [data]       source, format, dataset, face, block sizes and margins, splits, jobs  (= `preprocess`)
    [train]      every TrainConfig field: model, epochs, lr, labels, ...                (= `train`)
    [evaluate]   splits, tta_flip                                                        (= `evaluate`)
    [preview]    count, seed

The folder holds ``config.toml`` (the config used, copied), ``shards/``, ``run/``,
``eval-<split>/``, ``preview.png`` and ``report.md``. A stage whose output is complete and valid
is skipped (shards verified against their checksums, a training run that ended, metrics of the
current best checkpoint); an interrupted stage resumes; a stage that had to run makes every later
stage run again. A config that differs from the one the folder was made with is refused unless
``overwrite``, which re-runs the stages of the changed tables and the stages that depend on them.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from training.errors import TrainingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SPLITS = ("train", "val", "test")
CONFIG_COPY = "config.toml"
RESOLVED = "config.resolved.json"  # the parsed config with absolute paths: what a re-run is compared with


class ChainConfigError(TrainingError):
    """A config file that cannot be read, or a key that is unknown or has a wrong value."""


class ChainError(TrainingError):
    """An output folder that cannot be continued with this config."""


# ---------------------------------------------------------------------------------------------
# Config schema: one Option per key, with its type, default and the values it allows


@dataclass(frozen=True)
class Option:
    kind: str  # "str", "int", "float", "bool", "size", "str_list", "dict", "str?", "int?", "str_list?"
    default: Any
    help: str
    choices: tuple[str, ...] = ()


def _data_options() -> dict[str, Option]:
    from prepro.landmarks import FACE_MODES
    from prepro.readers import FORMATS

    return {
        "source": Option("str?", None, "raw images: a folder, the FER2013 CSV, ... (relative to this file)"),
        "format": Option("str", "auto", "layout of the source", tuple(FORMATS)),
        "dataset": Option("str?", None, "dataset description: fer2013, fer2013-csv, ferg, ckplus, jaffe or a .toml"),
        "face": Option("str", "auto", "how the face is found", tuple(FACE_MODES)),
        "eyes_size": Option("size", "32x96", "eyes-and-eyebrows block, HxW"),
        "mouth_size": Option("size", "32x64", "mouth block, HxW"),
        "face_size": Option("size", "64x64", "aligned whole face, HxW"),
        "eyes_margin": Option("float", 0.2, "margin around the eyes, times the inter-ocular distance"),
        "mouth_margin": Option("float", 0.2, "margin around the mouth, times the inter-ocular distance"),
        "face_margin": Option("float", 0.1, "margin around the face, times the inter-ocular distance"),
        "rotate": Option("bool", True, "rotate the face so the eyes are level"),
        "pad": Option("str", "replicate", "how blocks past the image border are filled", ("replicate", "constant")),
        "shard_size": Option("int", 1024, "samples per HDF5 shard"),
        "max_megapixels": Option("float", 40.0, "images claiming more pixels are refused undecoded"),
        "val_frac": Option("float", 0.1, "for sources without splits: fraction in val"),
        "test_frac": Option("float", 0.1, "for sources without splits: fraction in test"),
        "split_seed": Option("int", 0, "seed of that split"),
        "split_by_subject": Option("bool", False, "keep each subject in one split"),
        "limit": Option("int?", None, "only the first N items"),
        "jobs": Option("int", -1, "worker processes; -1 = all cores"),
    }


def _train_options() -> dict[str, Option]:
    from architectures import list_models
    from training.config import TrainConfig

    cfg = TrainConfig()
    kinds = {"labels": "str_list?", "model_kwargs": "dict"}
    choices = {"model": tuple(list_models()), "class_weighting": ("none", "inverse", "sqrt"),
               "train_split": SPLITS, "val_split": SPLITS}
    # The comment after each TrainConfig field documents it; the template shows the same text.
    docs = dict(re.findall(r"^    (\w+): [^=]+= .*?  # (.*)$", inspect.getsource(TrainConfig), re.M))
    out = {}
    for f in fields(TrainConfig):
        if f.name == "progress":  # a display option: `faceblocks run -q`
            continue
        value = getattr(cfg, f.name)
        kind = kinds.get(f.name) or {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]
        out[f.name] = Option(kind, value, docs.get(f.name, f.name), choices.get(f.name, ()))
    return out


def _schema() -> dict[str, dict[str, Option]]:
    return {
        "run": {"out": Option("str?", None, "the output folder (relative to this file); --out overrides it")},
        "data": _data_options(),
        "train": _train_options(),
        "evaluate": {"splits": Option("str_list", ["val", "test"], "splits to evaluate; empty ones are noted",
                                      SPLITS),
                     "tta_flip": Option("bool", False, "average each face's and its mirror image's predictions")},
        "preview": {"count": Option("int", 20, "samples on the contact sheet"),
                    "seed": Option("int", 0, "seed of the random choice")},
    }


_KIND_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "size": 'a size such as "32x96" or [32, 96]', "str_list": "a list of strings",
               "dict": "a table", "str?": "a string", "int?": "an integer", "str_list?": "a list of strings"}


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _check_value(key: str, opt: Option, v: Any) -> Any:
    """``v`` converted to the option's kind, or ChainConfigError naming the key and what is allowed."""
    def bad(extra: str = "") -> ChainConfigError:
        allowed = f"one of {', '.join(map(repr, opt.choices))}" if opt.choices and opt.kind == "str" \
            else _KIND_WORDS[opt.kind]
        return ChainConfigError(f"{key} must be {allowed}, got {v!r} ({_type_name(v)}){extra}")

    if v is None and opt.kind.endswith("?"):
        return None  # an optional key left at its default (TOML itself has no null)
    kind = opt.kind.rstrip("?")
    if kind == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad()
        return v
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad()
        return float(v)
    if kind == "str":
        if not isinstance(v, str):
            raise bad()
        if opt.choices and v not in opt.choices:
            raise bad()
        return v
    if kind == "size":
        if isinstance(v, str):
            parts = v.lower().split("x")
            if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
                v = [int(p) for p in parts]
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 4 <= x <= 1024 for x in v)):
            raise bad(" (each side 4 to 1024 pixels)")
        return [int(v[0]), int(v[1])]
    if kind == "str_list":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad()
        wrong = [x for x in v if opt.choices and x not in opt.choices]
        if wrong:
            raise ChainConfigError(f"{key}: unknown value {', '.join(map(repr, wrong))}; allowed: "
                                   f"{', '.join(opt.choices)}")
        return list(v)
    if kind == "dict":
        if not isinstance(v, dict):
            raise bad()
        return json.loads(json.dumps(v))
    raise AssertionError(f"unknown option kind {opt.kind}")  # a bug in the schema, not user input


@dataclass
class ChainConfig:
    """A validated config: every table filled with defaults, paths absolute."""

    path: Path  # the config file
    values: dict[str, dict[str, Any]]  # table -> key -> value (JSON types)

    def __getitem__(self, table: str) -> dict[str, Any]:
        return self.values[table]

    def preprocess_config(self):
        from prepro.blocks import BlockConfig
        from prepro.pipeline import PreprocessConfig

        d = self["data"]
        try:
            return PreprocessConfig(
                fmt=d["format"], dataset=d["dataset"], face_mode=d["face"],
                blocks=BlockConfig(eyes_size=tuple(d["eyes_size"]), mouth_size=tuple(d["mouth_size"]),
                                   face_size=tuple(d["face_size"]), eyes_margin=d["eyes_margin"],
                                   mouth_margin=d["mouth_margin"], face_margin=d["face_margin"],
                                   rotate=d["rotate"], pad=d["pad"]),
                shard_size=d["shard_size"], max_pixels=int(d["max_megapixels"] * 1e6), val_frac=d["val_frac"],
                test_frac=d["test_frac"], split_seed=d["split_seed"], split_by_subject=d["split_by_subject"],
                limit=d["limit"])
        except ValueError as e:
            raise ChainConfigError(f"{self.path} [data]: {e}") from None

    def train_config(self):
        from training.config import TrainConfig

        cfg = TrainConfig.from_dict({**self["train"], "progress": True})
        try:
            cfg.validate()
        except TrainingError as e:
            raise ChainConfigError(f"{self.path} [train]: {e}") from None
        return cfg


def load_config(path: str | os.PathLike) -> ChainConfig:
    """Read and validate a run config; unknown tables or keys and wrong values are ChainConfigError."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChainConfigError(f"no config file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ChainConfigError(f"cannot read {path} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ChainConfigError(f"{path} is not valid TOML ({e})") from None
    schema = _schema()
    unknown = [t for t in raw if t not in schema]
    if unknown:
        raise ChainConfigError(f"{path}: unknown table or key {', '.join(map(repr, unknown))} at the top level; "
                               f"allowed tables: {', '.join(f'[{t}]' for t in schema)}")
    values: dict[str, dict[str, Any]] = {}
    for table, options in schema.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise ChainConfigError(f"{path}: {table} must be a table ([{table}]), got {_type_name(given)}")
        bad = [k for k in given if k not in options]
        if bad:
            raise ChainConfigError(f"{path}: unknown key {', '.join(f'{table}.{k}' for k in bad)}; allowed in "
                                   f"[{table}]: {', '.join(options)}")
        values[table] = {}
        for key, opt in options.items():
            v = given[key] if key in given else json.loads(json.dumps(opt.default))
            values[table][key] = _check_value(f"{path}: {table}.{key}", opt, v)
    if not values["data"]["source"]:
        raise ChainConfigError(f"{path}: data.source is required (the raw images to preprocess)")
    base = path.resolve().parent
    values["data"]["source"] = str((base / values["data"]["source"]).resolve())
    if values["run"]["out"]:
        values["run"]["out"] = str((base / values["run"]["out"]).resolve())
    cfg = ChainConfig(path=path, values=values)
    cfg.preprocess_config()
    cfg.train_config()
    return cfg


def template() -> str:
    """A commented config with every key at its default: a starting point for `faceblocks run`."""
    lines = ["# faceblocks run config: `faceblocks run this.toml`. Paths are relative to this file.", ""]
    for table, options in _schema().items():
        lines.append(f"[{table}]")
        for key, opt in options.items():
            value = opt.default
            if table == "data" and key == "source":
                value = "path/to/fer2013"
            elif table == "run" and key == "out":
                value = "runs/fer2013"
            comment = opt.help + (f"; one of {', '.join(opt.choices)}" if opt.choices else "")
            if value is None:
                lines.append(f"# {key} =   # {comment}")
            else:
                lines.append(f"{key} = {_toml_value(value)}   # {comment}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)  # strings, numbers and lists read the same in TOML


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
    from training.checkpoint import load_checkpoint
    from training.config import RUN_CONTROL_FIELDS, TrainConfig, differing_fields
    from training.engine import RESULT_FILE

    try:
        result = json.loads((run / RESULT_FILE).read_text(encoding="utf-8"))
        last = load_checkpoint(run / "last.pt")
        best = load_checkpoint(run / "best.pt")
    except (OSError, ValueError, TrainingError) as e:
        return f"no finished run ({str(e)[:120]})"
    if result.get("epochs_done") != last["epoch"]:
        return "its result does not match last.pt"
    changed = differing_fields(TrainConfig.from_dict(best["config"]), cfg,
                               ignore=RUN_CONTROL_FIELDS - {"epochs", "max_minutes", "patience"})
    if changed:
        return f"it was trained with other settings ({', '.join(changed)})"
    if best.get("preprocessing") != shards_params:
        return "it was trained on other shards"
    return None


def run_chain(config_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, overwrite: bool = False,
              jobs: int | None = None, progress: bool = True,
              log: Callable[[str], None] = lambda msg: None) -> ChainResult:
    """Run the stages of ``config_path`` into ``out_dir`` (default: the config's ``run.out``)."""
    cfg = load_config(config_path)
    out = Path(out_dir).resolve() if out_dir is not None else None
    if out is None:
        if not cfg["run"]["out"]:
            raise ChainConfigError(f"{config_path}: say where the run goes with run.out or --out")
        out = Path(cfg["run"]["out"])
    values = json.loads(json.dumps(cfg.values))
    values["run"]["out"] = str(out)

    # -- the folder: new, the same config (continue), or another config (refused unless overwrite)
    changed: set[str] = set()  # tables whose values differ from the folder's config
    resolved = out / RESOLVED
    if resolved.is_file():
        try:
            old = json.loads(resolved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        diffs = [(t, d) for t, d in _differences(old, values) if t != "run"]
        if diffs and not overwrite:
            shown = "; ".join(d for _, d in diffs[:5]) + ("; ..." if len(diffs) > 5 else "")
            raise ChainError(f"{out} was made with another config ({shown}): pass --overwrite to redo the "
                             "stages that depend on it, or choose another --out")
        if diffs:
            changed = {t for t, _ in diffs}
    elif out.exists() and any(out.iterdir()):
        raise ChainError(f"{out} is not empty and holds no `faceblocks run` output: choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)

    from prepro.shards import atomic_write, atomic_write_text

    config_bytes = Path(config_path).read_bytes()
    atomic_write(out / CONFIG_COPY, lambda f: f.write(config_bytes))
    atomic_write_text(resolved, json.dumps(values, indent=1))
    result = ChainResult(out_dir=out)
    shards, run = out / "shards", out / "run"

    # -- stage 1: preprocess (resumes by itself; verified when it had nothing left to do)
    from prepro.pipeline import run_preprocess
    from prepro.shards import Manifest, verify

    t0 = time.monotonic()
    pcfg = cfg.preprocess_config()
    redo = "data" in changed
    n_jobs = jobs if jobs is not None else cfg["data"]["jobs"]
    log("[1/4] preprocess" + (" (config changed: redoing)" if redo else ""))
    summary = run_preprocess(cfg["data"]["source"], str(shards), pcfg, jobs=n_jobs, overwrite=redo,
                             progress=progress, log=log)
    if summary.written_now == 0 and not redo:
        report = verify(shards)
        if not report.whole:
            log(f"the shards are damaged ({'; '.join(report.problems[:3])}): preprocessing again")
            shutil.rmtree(shards)  # the chain's own folder: its shards can be rebuilt from the source
            summary = run_preprocess(cfg["data"]["source"], str(shards), pcfg, jobs=n_jobs, progress=progress,
                                     log=log)
    ran = summary.written_now > 0 or redo
    shards_changed = ran  # the preview depends on the shards alone
    result.stages.append(StageRecord("preprocess", "ran" if ran else "skipped", time.monotonic() - t0,
                                     f"{summary.samples} samples, {summary.failed} inputs not used"))
    log(f"preprocess: {result.stages[-1].action}, {result.stages[-1].detail}")
    manifest = Manifest.load(shards)

    # -- stage 2: train (resume a stopped run; keep a finished one that fits these shards and settings)
    from training.engine import train

    t0 = time.monotonic()
    tcfg = cfg.train_config()
    tcfg.progress = progress
    why = "earlier stage ran" if ran else ("config changed" if "train" in changed else
                                         _train_finished(run, tcfg, manifest.params))
    if why is None:
        action = "skipped"
    elif not ran and "train" not in changed and (run / "last.pt").is_file() \
            and not (run / "result.json").is_file():
        log(f"[2/4] train: resuming the stopped run in {run}")
        try:
            train(str(shards), str(run), tcfg, resume=True, log=log)
            action = "resumed"
        except TrainingError as e:
            log(f"cannot resume ({e}): training again")
            train(str(shards), str(run), tcfg, overwrite=True, log=log)
            action = "ran"
    else:
        log(f"[2/4] train {tcfg.model} in {run}" + (f" ({why})" if run.exists() else ""))
        train(str(shards), str(run), tcfg, overwrite=True, log=log)
        action = "ran"
    ran = ran or action != "skipped"
    train_result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    result.stages.append(StageRecord("train", action, time.monotonic() - t0,
                                     f"{train_result['epochs_done']} epochs, best val macro-F1 "
                                     f"{train_result['best_val_macro_f1']:.4f} at epoch {train_result['best_epoch']}"))
    log(f"train: {action}, {result.stages[-1].detail}")

    # -- stage 3: evaluate each split (skipped when metrics of this very checkpoint are there)
    from prepro.shards import sha256_file
    from training.engine import evaluate, format_metrics_table
    from training.errors import EmptySplitError

    t0 = time.monotonic()
    sha = sha256_file(run / "best.pt")
    tta = cfg["evaluate"]["tta_flip"]
    done, evaluated = [], False
    for split in cfg["evaluate"]["splits"]:
        ev = out / f"eval-{split}"
        old = _read_json(ev / "metrics.json")
        if (not ran and "evaluate" not in changed and old.get("checkpoint_sha256") == sha
                and old.get("tta_flip") == tta and old.get("split") == split):
            result.metrics[split] = old
            done.append(f"{split} skipped")
            continue
        log(f"[3/4] evaluate on {split}")
        try:
            result.metrics[split] = evaluate(str(run), str(shards), split=split, tta_flip=tta, out_dir=ev)
        except EmptySplitError:
            shutil.rmtree(ev, ignore_errors=True)  # no stale metrics of an earlier run
            done.append(f"{split}: no labelled samples")
            continue
        log(format_metrics_table(result.metrics[split]))
        done.append(f"{split} evaluated")
        evaluated = True
    result.stages.append(StageRecord("evaluate", "ran" if evaluated else "skipped",
                                     time.monotonic() - t0, ", ".join(done)))

    # -- stage 4: preview
    from prepro.preview import contact_sheet

    t0 = time.monotonic()
    sheet = out / "preview.png"
    if (not shards_changed and "preview" not in changed and sheet.is_file()
            and sheet.stat().st_mtime >= (shards / "manifest.json").stat().st_mtime):
        result.stages.append(StageRecord("preview", "skipped", time.monotonic() - t0))
    else:
        log("[4/4] preview")
        contact_sheet(shards, sheet, count=cfg["preview"]["count"], seed=cfg["preview"]["seed"])
        result.stages.append(StageRecord("preview", "ran", time.monotonic() - t0))

    result.report = write_report(out, cfg, result, manifest, train_result)
    return result


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


# ---------------------------------------------------------------------------------------------
# report.md


def markdown_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def write_report(out: Path, cfg: ChainConfig, result: ChainResult, manifest, train_result: dict[str, Any]) -> Path:
    """A short Markdown report of the run's figures, with its pictures linked."""
    from architectures import count_params
    from prepro.shards import atomic_write_text, summarize
    from training.checkpoint import build_model_from_checkpoint, load_checkpoint

    s = summarize(out / "shards")
    d, t = cfg["data"], cfg["train"]
    n_params = count_params(build_model_from_checkpoint(load_checkpoint(out / "run" / "best.pt")))
    history = load_checkpoint(out / "run" / "last.pt", for_resume=True)["history"]
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
              f"({train_result['stop_reason']}) in {sum(float(r.get('seconds', 0)) for r in history):.0f} s; "
              f"best val macro-F1 "
              f"{train_result['best_val_macro_f1']:.4f} at epoch {train_result['best_epoch']}.", "",
              "![training curves](run/curves.png)", "", "## Evaluation", ""]
    if not result.metrics:
        lines += ["No split was evaluated.", ""]
    for split, m in result.metrics.items():
        lines += [f"### {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                  f"({m['n_samples']} samples{', flip TTA' if m.get('tta_flip') else ''})", ""]
        regions = m["regions"]
        rows = [[name, f"{pc['precision']:.3f}", f"{pc['recall']:.3f}", f"{pc['f1']:.3f}", pc["support"]]
                + [f"{m['region_weights_per_class'].get(name, {}).get(r, float('nan')):.3f}" for r in regions]
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
