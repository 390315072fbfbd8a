"""faceblocks networks: registered by name, built with ``create_model(name, num_classes, **kw)``.

Importing the package is light (``architectures.names`` holds the model names without torch);
torch and the networks load on first use of ``create_model`` and the other names below.

`architectures.registry` is a leaf that knows no network; each network module registers itself
with it when imported, and this package imports them (as timm's ``models/__init__.py`` does) so
that every name in ``architectures.names.MODEL_NAMES`` can be built.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = ("Output", "UnknownModelError", "count_params", "create_model", "list_models", "register_model")
# Not in __all__: the library's own check of a network's arguments, reached here so that the networks are registered.
_LIBRARY = ("check_model_arguments",)

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC or name in _LIBRARY:
        # Imported on first use, not at package import: torch is seconds, and `faceblocks -h`
        # reads architectures.names through this package.
        from architectures import ensemble, face_cnn, two_branch  # noqa: F401 - they register themselves
        from architectures import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'architectures' has no attribute {name!r}")
