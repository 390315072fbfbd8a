"""faceblocks networks: registered by name, built with ``create_model(name, num_classes, **kw)``.

Importing the package is light (``architectures.names`` holds the model names without torch);
torch and the networks load on first use of ``create_model`` and the other names below.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = ("Output", "UnknownModelError", "count_params", "create_model", "list_models", "register_model")

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        from architectures import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'architectures' has no attribute {name!r}")
