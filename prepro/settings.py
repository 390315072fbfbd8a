"""Typed settings: each option is one dataclass field that carries its help, kind and allowed values.

A settings class (`prepro.blocks.BlockConfig`, `prepro.detection.DetectorSettings`,
`prepro.config.PreprocessConfig`, `training.config.TrainConfig`, ...) declares its fields with
`setting`; everything else is derived from those fields: the checks (`check`, run by each class's
``__post_init__``), reading a mapping such as a TOML table (`from_mapping`, with errors that name
the key), the command-line options (``cli.py``) and the `faceblocks run --template` text. Adding an
option is adding one field.

A field whose type is itself a settings class is *nested*: its fields appear flat, beside the
parent's, on the command line and in config tables (``--eyes-size``, ``data.eyes_size``), and as a
sub-dict in ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from prepro.errors import InputError

KINDS = ("bool", "int", "float", "str", "size", "str_list", "dict")
# What a path option names, for the command line's checks of it: a file (or - for standard
# output), a folder, or either.
PATHS = ("file", "file or -", "folder", "any")
_KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "size": 'a size HEIGHTxWIDTH such as "32x96" (or [32, 96])', "str_list": "a list of strings",
               "dict": "a table"}


@dataclass(frozen=True)
class Spec:
    """What a field accepts; stored in the field's metadata under ``"setting"``."""

    kind: str  # one of KINDS
    help: str  # one line, for --help, the template and error messages
    choices: tuple[str, ...] = ()  # allowed values (str, or each item of str_list)
    low: float | None = None  # smallest allowed number (sizes: per side)
    high: float | None = None  # largest allowed number
    optional: bool = False  # None allowed (meaning "not set")
    cli: tuple[str, ...] = ()  # command-line declarations when not just --field-name (e.g. ("-j", "--jobs"))
    run_control: bool = False  # steers a run without changing its results (may change on resume)
    metavar: str | None = None  # the value's name in --help when not the kind's (e.g. "N|URL")
    path: str | None = None  # str: a path of this kind (one of PATHS), checked as click checks paths
    repeatable: bool = False  # str_list: the option may be given again, each time a name or a comma list


def setting(default: Any, help: str, kind: str, *, choices: tuple[str, ...] | list[str] = (), low: float | None = None,
            high: float | None = None, optional: bool = False, cli: str | tuple[str, ...] = (),
            run_control: bool = False, metavar: str | None = None, path: str | None = None,
            repeatable: bool = False) -> Any:
    """A dataclass field with its `Spec`; mutable defaults are copied per instance."""
    if kind not in KINDS or (path is not None and path not in PATHS):
        raise TypeError(f"unknown setting kind {kind!r} or path {path!r}")  # a programming error
    spec = Spec(kind, help, tuple(choices), low, high, optional, (cli,) if isinstance(cli, str) else tuple(cli),
                run_control, metavar, path, repeatable)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata={"setting": spec})
    return field(default=default, metadata={"setting": spec})


def nested(cls: type, help: str = "") -> Any:
    """A field holding another settings class, flattened into the parent's options."""
    return field(default_factory=cls, metadata={"nested": help})


@dataclass(frozen=True)
class Option:
    """One flat option of a settings class: where it lives and what it accepts."""

    name: str  # the key in config tables and the dotted-free field name
    path: tuple[str, ...]  # nested field names from the root class down to this field
    spec: Spec
    default: Any

    @property
    def cli(self) -> tuple[str, ...]:
        """The click parameter declarations."""
        return self.spec.cli or ("--" + self.name.replace("_", "-"),)


def options(cls: type) -> list[Option]:
    """The flat options of settings class ``cls``, nested classes expanded in field order."""
    out: list[Option] = []
    for f in fields(cls):
        if "nested" in f.metadata:
            sub = f.default_factory  # type: ignore[misc]
            out += [dataclasses.replace(o, path=(f.name,) + o.path) for o in options(sub)]
        elif "setting" in f.metadata:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            out.append(Option(f.name, (f.name,), f.metadata["setting"], default))
    return out


def check_value(key: str, spec: Spec, v: Any) -> Any:
    """``v`` converted to the spec's kind (sizes to tuples), or InputError naming ``key`` and what
    is allowed. Non-finite numbers are always refused."""
    def bad(extra: str = "") -> InputError:
        allowed = (f"one of {', '.join(map(repr, spec.choices))}" if spec.choices and spec.kind == "str"
                   else _KIND_WORDS[spec.kind])
        return InputError(f"{key} must be {allowed}{_range_words(spec)}, got {_shown(v)} ({_type_name(v)}){extra}")

    if v is None:
        if spec.optional:
            return None
        raise bad()
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if spec.kind in ("int", "float"):
        ok = isinstance(v, int) if spec.kind == "int" else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not _is_number_in_range(v, spec):
            raise bad()
        return float(v) if spec.kind == "float" else int(v)
    if spec.kind == "str":
        if not isinstance(v, str) or (spec.choices and v not in spec.choices):
            raise bad()
        return v
    if spec.kind == "size":
        return _size(v, spec, bad)
    if spec.kind == "str_list":
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad()
        wrong = [x for x in v if spec.choices and x not in spec.choices]
        if wrong:
            raise InputError(f"{key}: unknown value {', '.join(map(repr, wrong))}; allowed: {', '.join(spec.choices)}")
        return list(v)
    if not isinstance(v, dict):  # dict
        raise bad()
    try:
        return json.loads(json.dumps(v, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InputError(f"{key} must hold plain JSON values ({e})") from None


def parse_size(text: str) -> tuple[int, int] | None:
    """"32x96" -> (32, 96); None when ``text`` is not HEIGHTxWIDTH."""
    parts = str(text).lower().split("x")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _size(v: Any, spec: Spec, bad) -> tuple[int, int]:
    if isinstance(v, str):
        v = parse_size(v) or v
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and _in_range(x, spec) for x in v)):
        raise bad()
    return int(v[0]), int(v[1])


# No setting needs more; a larger integer (TOML and JSON allow 400 digits) would overflow a float
# or a C integer wherever it is used.
_LARGEST_INT = 2**63 - 1


def _is_number_in_range(v: int | float, spec: Spec) -> bool:
    """True for a finite number within the spec's range; integers beyond 64 bits are never in range
    (math.isfinite of one raises OverflowError)."""
    if isinstance(v, int):
        return abs(v) <= _LARGEST_INT and _in_range(v, spec)
    return math.isfinite(v) and _in_range(v, spec)


def _in_range(v: float, spec: Spec) -> bool:
    return (spec.low is None or v >= spec.low) and (spec.high is None or v <= spec.high)


def _range_words(spec: Spec) -> str:
    if spec.kind not in ("int", "float", "size") or (spec.low is None and spec.high is None):
        return ""
    what = " (each side" if spec.kind == "size" else " ("
    lo = f"{spec.low:g}" if spec.low is not None else None
    hi = f"{spec.high:g}" if spec.high is not None else None
    rng = f"{lo} to {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}")
    return f"{what}{' ' if spec.kind == 'size' else ''}{rng})"


def _shown(v: Any) -> str:
    """``repr(v)``, but a huge integer by its size (its digits would fill the screen, and Python
    refuses to write more than 4300 of them)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _LARGEST_INT:
        return f"{'a negative' if v < 0 else 'an'} integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
    text = repr(v)
    return text if len(text) <= 200 else text[:197] + "..."


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a table", type(None): "nothing"}.get(type(v), type(v).__name__)


def check(obj: Any, where: str = "") -> None:
    """Check and normalise every setting field of ``obj`` in place (frozen classes too)."""
    for f in fields(obj):
        if "setting" not in f.metadata:
            continue
        value = check_value(f"{where}{f.name}", f.metadata["setting"], getattr(obj, f.name))
        object.__setattr__(obj, f.name, value)


def from_mapping(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build settings class ``cls`` from a flat mapping of option names (nested fields flattened);
    an unknown key or a bad value is an InputError that names ``where`` + the key."""
    if not isinstance(values, dict):
        raise InputError(f"{where.rstrip('.') or 'settings'} must be a table, got {_type_name(values)}")
    known = {o.name for o in options(cls)}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise InputError(f"unknown key {', '.join(where + k for k in unknown)}; allowed: {', '.join(sorted(known))}")
    return _build(cls, values, where)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    kw = {}
    for f in fields(cls):
        if "nested" in f.metadata:
            kw[f.name] = _build(f.default_factory, values, where)  # type: ignore[misc]
        elif "setting" in f.metadata and f.name in values:
            kw[f.name] = check_value(where + f.name, f.metadata["setting"], values[f.name])
    try:
        return cls(**kw)
    except InputError as e:
        raise InputError(f"{where}{e}" if where and not str(e).startswith(where) else str(e)) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a settings object: nested classes as sub-dicts, sizes as [H, W] lists.
    Only settings are included (a plain field such as a fixed constant is no option), so that
    `from_dict` reads back every dict this writes."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if "nested" in f.metadata:
            out[f.name] = to_dict(getattr(obj, f.name))
        elif "setting" in f.metadata:
            out[f.name] = getattr(obj, f.name)
    return json.loads(json.dumps(out))


def from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Inverse of `to_dict` (nested sub-dicts); unknown keys are an InputError."""
    if not isinstance(d, dict):
        raise InputError(f"{where.rstrip('.') or 'settings'} must be a table, got {_type_name(d)}")
    flat: dict[str, Any] = {}
    nested_names = {f.name: f for f in fields(cls) if "nested" in f.metadata}
    for k, v in d.items():
        if k in nested_names and isinstance(v, dict):
            sub = nested_names[k].default_factory  # type: ignore[misc]
            flat.update(to_dict(from_dict(sub, v, where)))
        else:
            flat[k] = v
    return from_mapping(cls, flat, where)


