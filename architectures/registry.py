"""Model registry: every network is registered by name and built by one ``create_model``."""

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


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` go to its constructor (e.g. block sizes, widths)."""
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        model = _MODELS[name](num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad arguments for {name!r} ({e})") from None
    model.arch_name = name
    return model


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# The networks register themselves on import; imported here, after the registry exists, so that
# `create_model` knows every name in architectures.names.MODEL_NAMES.
from architectures import face_cnn as _face_cnn  # noqa: E402,F401
from architectures import two_branch as _two_branch  # noqa: E402,F401
