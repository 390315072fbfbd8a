"""The config of `faceblocks run`: its tables (the [data] and [train] tables are the preprocess
and train settings classes; the small tables are settings classes of their own), reading a TOML
file into a `ChainConfig`, and the commented template. Light to import: the command line derives
`run`'s options from these tables at start-up.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import InputError
from prepro.settings import check, from_mapping, options, setting
from training.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_COPY = "config.toml"
RESOLVED = "config.resolved.json"  # the parsed config with absolute paths: what a re-run is compared with


# ---------------------------------------------------------------------------------------------
# Config schema: the [data] and [train] tables are the preprocess and train settings classes;
# the small tables are settings classes of their own.


@dataclass(frozen=True)
class RunTable:
    out: str | None = setting(None, "the output folder (relative to this file); --out overrides it", "str",
                              optional=True, path="folder")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class SourceTable:
    source: str | None = setting(None, "raw images: a folder, the FER2013 CSV, a label file, ... (relative to "
                                 "this file)", "str", optional=True)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class EvaluateTable:
    splits: list[str] = setting(["val", "test"], "splits to evaluate; empty ones are noted", "str_list",
                                choices=("train", "val", "test"))
    tta_flip: bool = setting(False, "average each face's and its mirror image's predictions", "bool")
    tta_shift: bool = setting(False, "also average over the blocks moved by one pixel in each of the 8 directions",
                              "bool")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class PreviewTable:
    count: int = setting(20, "samples on the contact sheet", "int", low=1, high=400)
    seed: int = setting(0, "seed of the random choice", "int", low=0, high=2**31 - 1)

    def __post_init__(self) -> None:
        check(self)


def _tables() -> dict[str, tuple[type, ...]]:
    """Config table -> the settings classes whose options it holds."""
    return {"run": (RunTable,), "data": (SourceTable, PreprocessConfig, PreprocessRun), "train": (TrainConfig,),
            "evaluate": (EvaluateTable,), "preview": (PreviewTable,)}


_NOT_IN_CONFIG = {"progress", "backend", "scheduler", "chunk_size", "landmark_model"}  # command-line matters


def _table_options(classes: tuple[type, ...]):
    return [o for cls in classes for o in options(cls) if o.name not in _NOT_IN_CONFIG]


@dataclass
class ChainConfig:
    """A validated config: every table filled with defaults, paths absolute."""

    path: Path  # the config file
    values: dict[str, dict[str, Any]]  # table -> key -> value (JSON types)

    def __getitem__(self, table: str) -> dict[str, Any]:
        return self.values[table]

    def preprocess_config(self):
        return _build(PreprocessConfig, self["data"], f"{self.path}: data.")

    def train_config(self):
        return _build(TrainConfig, {**self["train"], "progress": True}, f"{self.path}: train.")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {o.name for o in options(cls)}
    return from_mapping(cls, {k: v for k, v in values.items() if k in names}, where)


def load_config(path: str | os.PathLike) -> ChainConfig:
    """Read and validate a run config: unknown tables or keys and wrong values are an InputError
    naming the key and what is allowed; every value is checked before any stage runs."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no config file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path} ({e})") from None
    except ValueError as e:  # TOMLDecodeError, or an integer of more digits than Python converts
        raise InputError(f"{path} is not valid TOML ({str(e)[:200]})") from None
    tables = _tables()
    unknown = [t for t in raw if t not in tables]
    if unknown:
        raise InputError(f"{path}: unknown table or key {', '.join(map(repr, unknown))} at the top level; "
                         f"allowed tables: {', '.join(f'[{t}]' for t in tables)}")
    values: dict[str, dict[str, Any]] = {}
    for table, classes in tables.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise InputError(f"{path}: {table} must be a table ([{table}])")
        opts = {o.name: o for o in _table_options(classes)}
        bad = [k for k in given if k not in opts]
        if bad:
            raise InputError(f"{path}: unknown key {', '.join(f'{table}.{k}' for k in bad)}; allowed in "
                             f"[{table}]: {', '.join(opts)}")
        for cls in classes:  # every value, given or default, goes through the class's own checks
            _build(cls, given, f"{path}: {table}.")
        values[table] = {k: json.loads(json.dumps(given.get(k, o.default))) for k, o in opts.items()}
    if not values["data"]["source"]:
        raise InputError(f"{path}: data.source is required (the raw images to preprocess)")
    base = path.resolve().parent
    for key in ("source", "image_root", "votes_file"):
        if values["data"][key]:
            values["data"][key] = str((base / values["data"][key]).resolve())
    if values["run"]["out"]:
        values["run"]["out"] = str((base / values["run"]["out"]).resolve())
    _resolve_models(values["train"], base)
    return ChainConfig(path=path, values=values)


def _resolve_models(train: dict[str, Any], base: Path) -> None:
    """init and teachers that are paths become paths relative to the config file, like every other
    path in it; a bare name (fer2013) stays a shipped model's name."""
    # imported here: the model resolver loads torch, which `faceblocks -h` never needs
    from training.model_names import is_bare_name

    def resolved(ref: str) -> str:
        here = base / ref
        return str(here.resolve()) if here.exists() or not is_bare_name(ref) else ref

    if train.get("init"):
        train["init"] = resolved(train["init"])
    if train.get("teachers"):
        train["teachers"] = [resolved(t) for t in train["teachers"]]


def template() -> str:
    """A commented config with every key at its default: a starting point for `faceblocks run`."""
    lines = ["# faceblocks run config: `faceblocks run this.toml`. Paths are relative to this file.", ""]
    for table, classes in _tables().items():
        lines.append(f"[{table}]")
        for opt in _table_options(classes):
            key, value = opt.name, opt.default
            if table == "data" and key == "source":
                value = "path/to/fer2013"
            elif table == "run" and key == "out":
                value = "runs/fer2013-all"  # not README's `train` example folder: a run folder is refused here
            choices = opt.spec.choices
            comment = opt.spec.help + (f"; one of {', '.join(choices)}" if choices else "")
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
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v)  # strings, numbers and lists read the same in TOML
