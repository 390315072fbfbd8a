"""faceblocks preprocessing: raw face images to prior-attention HDF5 shards.

The small public API (nothing heavy is imported until used)::

    from prepro import preprocess, ShardReader
    summary = preprocess("data/fer2013", "out/fer2013", dataset="fer2013", face="aligned")   # -> RunSummary
    reader = ShardReader("out/fer2013", split="train")                                      # random access
    sample = reader.get(0, fields=("eyes", "mouth", "label"))                              # -> dict of arrays
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = ["preprocess", "ShardReader", "FaceCutter", "__version__"]


def preprocess(source: str, out_dir: str, *, jobs: int = -1, overwrite: bool = False, retry_failed: bool = False,
               progress: bool = True, **settings: Any):
    """Preprocess ``source`` into shards in ``out_dir``; ``settings`` are the `faceblocks preprocess`
    options by their Python names (``face="aligned"``, ``eyes_size=(32, 96)``, ``dataset="fer2013"``)."""
    from prepro.config import PreprocessConfig, PreprocessRun
    from prepro.pipeline import run_preprocess
    from prepro.settings import from_mapping

    return run_preprocess(source, out_dir, from_mapping(PreprocessConfig, settings), PreprocessRun(jobs=jobs),
                          overwrite=overwrite, retry_failed=retry_failed, progress=progress)


def __getattr__(name: str) -> Any:
    if name == "ShardReader":
        from prepro.shards import ShardReader

        return ShardReader
    if name == "FaceCutter":
        from prepro.faces import FaceCutter

        return FaceCutter
    raise AttributeError(f"module 'prepro' has no attribute {name!r}")
