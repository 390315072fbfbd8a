"""faceblocks' public API under one name; the repository keeps its packages (`prepro`, `training`,
`inference`, `architectures`), and each name here is theirs, imported on first use so that
``import faceblocks`` loads no torch, OpenCV or dlib::

    import faceblocks
    summary = faceblocks.preprocess("data/fer2013", "out/fer2013", dataset="fer2013", face="aligned")
    sample = faceblocks.ShardReader("out/fer2013", split="train").get(0, fields=("eyes", "mouth", "label"))
    result = faceblocks.train("out/fer2013", "runs/fer2013", faceblocks.TrainConfig(epochs=30))
    metrics = faceblocks.evaluate("runs/fer2013", "out/fer2013", split="val")
    for image in faceblocks.predict("fer2013", ["photo.jpg"]):
        print(image.path, [(face.label, face.box) for face in image.faces])
"""

from __future__ import annotations

from typing import Any

from prepro import __version__

# name -> the module that defines it
_WHERE = {
    "preprocess": "prepro", "ShardReader": "prepro.shards", "FaceCutter": "prepro.faces",
    "export_blocks": "prepro.export", "FaceblocksError": "prepro.errors",
    "TrainConfig": "training.config", "train": "training.train", "evaluate": "training.evaluate",
    "predict": "inference.predict", "Classifier": "inference.classifier", "PredictOptions": "inference.predictions",
    "predict_table": "inference.dataframe", "to_dataframe": "inference.dataframe",
    "export_model": "inference.export_model", "run_chain": "training.chain", "create_model": "architectures",
    "write_ensemble": "training.ensemble_checkpoint",
}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'faceblocks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__
