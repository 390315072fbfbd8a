"""faceblocks networks: registered by name, built with ``create_model(name, num_classes, **kw)``.

Importing this package imports torch (unavoidable for the model classes) and nothing else heavy.
"""

from architectures.registry import (Output, UnknownModelError, count_params, create_model, list_models,
                                    register_model)
from architectures import face_cnn as _face_cnn  # noqa: F401  (registers face-cnn)
from architectures import two_branch as _two_branch  # noqa: F401  (registers two-branch*)

__all__ = ["Output", "UnknownModelError", "count_params", "create_model", "list_models", "register_model"]
