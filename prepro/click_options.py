"""The command line's options: generated from the settings classes (one click option per field,
its kind, range and help defined once, in the class), the values click gives turned back into
settings, and the options several commands share (each declared once here).

Imported by ``cli.py`` at start-up: only click and the settings machinery, nothing heavy.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import click

from prepro.command_settings import SharedOptions
from prepro.settings import Option, Spec, from_mapping, options, parse_size


_PATH_TYPES = {"file": {"dir_okay": False}, "file or -": {"dir_okay": False, "allow_dash": True},
               "folder": {"file_okay": False}, "any": {}}


def _shown_help(spec: Spec) -> str:
    """A help written as a sentence (with its full stop) is shown as it is; a settings-style phrase
    becomes one."""
    return spec.help if spec.help.endswith(".") else spec.help[0].upper() + spec.help[1:] + "."


def _click_option(o: Option, default_override: Any = ..., required_none: bool = False,
                  help_override: str | None = None) -> Callable:
    spec = o.spec
    default = o.default if default_override is ... else default_override
    kw: dict[str, Any] = {"help": help_override or _shown_help(spec), "show_default": default is not None}
    decls = list(o.cli)
    if spec.kind == "bool":
        if len(decls) == 1 and "/" not in decls[0] and default:
            decls = [f"{decls[0]}/--no-{decls[0][2:]}"]  # on by default: the option turns it off
        if "/" not in decls[0]:
            kw["is_flag"] = True
        kw["default"] = None if default is None else bool(default)  # None: neither given, the library decides
    else:
        kw.update(_value_kw(spec, default))
    if spec.metavar:
        kw["metavar"] = spec.metavar
    if required_none:
        kw["default"], kw["show_default"] = None, False
    return click.option(*decls, o.name, **kw)


def _value_kw(spec: Spec, default: Any) -> dict[str, Any]:
    """The click type, default and metavar of a setting that is not a flag."""
    if spec.kind in ("int", "float") and (spec.low is not None or spec.high is not None):
        rng = click.IntRange if spec.kind == "int" else click.FloatRange
        return {"type": rng(spec.low, spec.high), "default": default}
    if spec.kind == "int":
        return {"type": click.INT, "default": default}
    if spec.kind == "str" and spec.choices:
        return {"type": click.Choice(list(spec.choices)), "default": default}
    if spec.kind == "str" and spec.path:
        return {"type": click.Path(path_type=str, **_PATH_TYPES[spec.path]), "default": default}
    if spec.kind == "size":
        return {"default": None if default is None else f"{default[0]}x{default[1]}", "metavar": "HxW"}
    if spec.kind == "str_list" and spec.repeatable:
        return {"multiple": True, "callback": lambda _ctx, _param, values: _names(values)}
    if spec.kind == "str_list":
        return {"default": None if default is None else ",".join(default), "metavar": "A,B,..."}
    if spec.kind == "dict":
        return {"default": None if default is None else json.dumps(default), "metavar": "JSON"}
    return {"default": default}


def _names(values: tuple[str, ...]) -> list[str] | None:
    """Repeated options and comma lists alike: ('train,val', 'test') -> ['train', 'val', 'test']."""
    names = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return names or None


def settings_options(*classes: type, skip: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> Callable:
    """Click options for every setting of ``classes`` (nested ones flattened), but ``skip``;
    ``overrides`` get no default (None: keep what the checkpoint says)."""
    def decorate(f: Callable) -> Callable:
        for cls in reversed(classes):
            for o in reversed(options(cls)):
                if o.name not in skip:
                    f = _click_option(o, required_none=o.name in overrides)(f)
        return f
    return decorate


def _cli_value(o: Option, v: Any) -> Any:
    """A click value as the settings check expects it (comma lists, JSON text)."""
    if v is None:
        return None
    if o.spec.kind == "str_list" and isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    if o.spec.kind == "dict" and isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError as e:
            raise click.BadParameter(f"{v!r} is not a JSON object ({e})", param_hint=o.cli[-1]) from None
    if o.spec.kind == "size" and isinstance(v, str) and parse_size(v) is None:
        raise click.BadParameter(f"{v!r} is not HEIGHTxWIDTH, e.g. 32x96", param_hint=o.cli[-1])
    return v


def setting_option(cls: type, name: str, default: Any = ..., help: str | None = None,
                   required_none: bool = False) -> Callable:
    """The click option of the one setting ``name`` of ``cls`` (its declarations, kind and range),
    with a command's own default and help when given."""
    (o,) = [o for o in options(cls) if o.name == name]
    return _click_option(o, default_override=default, required_none=required_none, help_override=help)


def setting_options(cls: type, *names: str) -> Callable:
    """The click options of the settings ``names`` of ``cls``, in that order."""
    def decorate(f: Callable) -> Callable:
        for name in reversed(names):
            f = setting_option(cls, name)(f)
        return f
    return decorate


# Options shared by several commands (`SharedOptions`), each command giving its own help.


def quiet_option(help: str | None = None) -> Callable:
    return setting_option(SharedOptions, "quiet", help=help)


def overwrite_option(help: str) -> Callable:
    return setting_option(SharedOptions, "overwrite", help=help)


def json_option(help: str) -> Callable:
    return setting_option(SharedOptions, "as_json", help=help)


def strict_option(help: str) -> Callable:
    return setting_option(SharedOptions, "strict", help=help)


def device_option() -> Callable:
    return setting_option(SharedOptions, "device")


def settings_from(cls: type, params: dict[str, Any], only_given: set[str] | None = None) -> Any:
    """Build settings class ``cls`` from click ``params`` (just the options in ``only_given`` if set)."""
    values = {o.name: _cli_value(o, params[o.name]) for o in options(cls)
              if o.name in params and (only_given is None or o.name in only_given)}
    return from_mapping(cls, values)
