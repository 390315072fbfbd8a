"""Model registry: every network is registered by name and built by one ``create_model``.

A leaf: it imports no network (each registers itself here; `architectures` imports them all).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from architectures.names import MODEL_NAMES
from prepro.errors import InputError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class Output(NamedTuple):
    """What every model returns: class logits and, per sample, one weight per region (rows sum to 1)."""

    logits: torch.Tensor  # (B, num_classes)
    region_weights: torch.Tensor  # (B, len(model.regions))


class UnknownModelError(InputError):
    """A model name that is not registered."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name with ``_`` spelled ``-``."""
    name = fn.__name__.replace("_", "-")
    if name not in MODEL_NAMES:
        raise TypeError(f"model {name!r} is not in architectures.names.MODEL_NAMES")  # a programming error
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


MAX_PARAMS = 100_000_000  # far above any faceblocks network (1-2 M); beyond it, arguments are a mistake


def check_model_arguments(name: str, num_classes: int, kwargs: dict) -> int:
    """The parameter count of ``name`` built with ``kwargs``, found on torch's meta device (no
    memory, no compute), so that bad arguments (negative or huge widths, unknown or duplicate
    keywords) are one InputError before any work starts, wherever they come from."""
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(kwargs, dict) or "num_classes" in kwargs:
        raise InputError(f"bad arguments for {name!r}: model_kwargs must be a table without num_classes "
                         "(the classes come from the shards)")
    import warnings

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on zero-size tensors: the error below says it
            model = _MODELS[name](num_classes=num_classes, **kwargs)
            # A forward pass on meta tensors checks the shapes fit (e.g. a zero width) at no cost.
            model(({r: torch.zeros(2, 1, 32, 32) for r in model.regions}))
    except Exception as e:  # noqa: BLE001 - any failure to build from user arguments is a bad argument
        raise InputError(f"bad arguments for {name!r}: {type(e).__name__}: {str(e)[:200]}") from None
    n = count_params(model, trainable_only=False)
    if n > MAX_PARAMS:
        raise InputError(f"bad arguments for {name!r}: {n:,} parameters, more than the {MAX_PARAMS:,} allowed")
    return n


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` go to its constructor (e.g. block sizes, widths)."""
    check_model_arguments(name, num_classes, kwargs)
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.arch_name = name
    return model


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

