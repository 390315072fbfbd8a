"""The command line's options: generated from the settings classes (one click option per field,
its kind, range and help defined once, in the class), the values click gives turned back into
settings, and the options several commands share (each declared once here).

Imported by ``cli.py`` at start-up: only click and the settings machinery, nothing heavy.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import click

from prepro.settings import Option, options, parse_size


def _click_option(o: Option, default_override: Any = ..., required_none: bool = False,
                  help_override: str | None = None) -> Callable:
    spec = o.spec
    default = o.default if default_override is ... else default_override
    shown_help = help_override or spec.help[0].upper() + spec.help[1:] + "."
    kw: dict[str, Any] = {"help": shown_help, "show_default": default is not None}
    decls = list(o.cli)
    if spec.kind == "bool":
        if len(decls) == 1 and "/" not in decls[0] and default:
            decls = [f"{decls[0]}/--no-{decls[0][2:]}"]  # on by default: the option turns it off
        if "/" not in decls[0]:
            kw["is_flag"] = True
        kw["default"] = bool(default)
    elif spec.kind in ("int", "float"):
        rng = click.IntRange if spec.kind == "int" else click.FloatRange
        kw["type"] = rng(spec.low, spec.high)
        kw["default"] = default
    elif spec.kind == "str" and spec.choices:
        kw["type"] = click.Choice(list(spec.choices))
        kw["default"] = default
    elif spec.kind == "size":
        kw["default"] = None if default is None else f"{default[0]}x{default[1]}"
        kw["metavar"] = "HxW"
    elif spec.kind == "str_list":
        kw["default"] = None if default is None else ",".join(default)
        kw["metavar"] = "A,B,..."
    elif spec.kind == "dict":
        kw["default"] = None if default is None else json.dumps(default)
        kw["metavar"] = "JSON"
    else:
        kw["default"] = default
    if required_none:
        kw["default"], kw["show_default"] = None, False
    return click.option(*decls, o.name, **kw)


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


# Options shared by several commands: declared once here, each command giving its own help.


def quiet_option(help: str = "No progress bar.") -> Callable:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def overwrite_option(help: str) -> Callable:
    return click.option("--overwrite", is_flag=True, help=help)


def json_option(help: str) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def strict_option(help: str) -> Callable:
    return click.option("--strict", is_flag=True, help=help)


def device_option() -> Callable:
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")


def tta_flip_option(help: str) -> Callable:
    return click.option("--tta-flip/--no-tta-flip", default=None, help=help)


def min_quality_option(default: float | None, help: str) -> Callable:
    return click.option("--min-quality", default=default, show_default=default is not None,
                        type=click.FloatRange(0, 1), help=help)


def settings_from(cls: type, params: dict[str, Any], only_given: set[str] | None = None) -> Any:
    """Build settings class ``cls`` from click ``params`` (just the options in ``only_given`` if set)."""
    from prepro.settings import from_mapping

    values = {o.name: _cli_value(o, params[o.name]) for o in options(cls)
              if o.name in params and (only_given is None or o.name in only_given)}
    return from_mapping(cls, values)
