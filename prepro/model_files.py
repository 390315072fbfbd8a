"""dlib's model files: where the shipped ones are found (`find_model_file`), and the 68-point
landmark model's file (`LandmarkModelFile`) with its terms of use.

Apart from `prepro.landmarks` (which re-exports these names) so that the command line can name
the model's terms and take `--landmark-model` without importing numpy or dlib at start-up.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prepro.errors import DataError, InputError

CNN_MODEL_FILE = "mmod_human_face_detector.dat"  # the face detector of `--detector cnn`
LANDMARK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARK_MODEL_TERMS = ("dlib's 68-point shape predictor, trained on the iBUG 300-W dataset, whose "
                        "licence excludes commercial use")


def find_model_file(name: str) -> Path:
    """A model file shipped in the face_recognition_models package (located without importing it:
    its import needs the removed ``pkg_resources``)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    dirs = [Path(d) for d in (spec.submodule_search_locations or [])] if spec is not None else []
    for d in dirs:
        if (d / "models" / name).is_file():
            return d / "models" / name
    where = "is not installed" if spec is None else f"has no models/{name}"
    raise InputError(f"the face_recognition_models package {where}: install it "
                     "(pip install face_recognition_models)")


@dataclass(frozen=True)
class LandmarkModelFile:
    """The 68-point model file to use: the one shipped in face_recognition_models, or a user's."""

    path: Path

    @classmethod
    def find(cls, path: str | Path | None = None) -> "LandmarkModelFile":
        """``path`` if given (it must exist), else the copy in the face_recognition_models package."""
        if path is not None:
            p = Path(path).expanduser()
            if not p.is_file():
                raise InputError(f"landmark model {str(p)!r} does not exist: pass an existing "
                                 f"{LANDMARK_MODEL_FILE} with --landmark-model, or leave the option out")
            return cls(p)
        return cls(find_model_file(LANDMARK_MODEL_FILE))

    @classmethod
    def default(cls) -> "LandmarkModelFile":
        return cls.find(None)

    def load(self) -> Any:
        """The loaded dlib model (once per process); a file that is no 68-point model is refused."""
        return _load_shape_model(str(self.path))


@lru_cache(maxsize=2)
def _load_shape_model(path: str) -> Any:
    # ~100 MB and ~1 s to load: one per process.
    # imported here: keeps faceblocks -h fast (dlib, numpy)
    import dlib
    import numpy as np

    try:
        model = dlib.shape_predictor(path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else "unreadable"
        raise DataError(f"{path} is not a dlib landmark model ({first}): pass the "
                        f"{LANDMARK_MODEL_FILE} shipped with face_recognition_models") from None
    parts = model(np.zeros((8, 8), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts
    if parts != 68:
        raise DataError(f"{path} predicts {parts} points, not 68: pass a 68-point model ({LANDMARK_MODEL_FILE})")
    return model

