"""export --format png: classes.txt and export.json give the class index map, and README's
ImageFolder example loads grey blocks with the model's indices (torchvision's own ImageFolder when
installed, else a stand-in with its documented behaviour: alphabetical classes, RGB by default)."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shardfakes import make_fake_shards

from prepro.export import export_blocks

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("happy", "surprise", "neutral", "angry")  # alphabetical order differs from the canonical one


def _fake_torchvision() -> types.ModuleType:
    """torchvision.datasets.ImageFolder's contract: classes are the sorted folder names, targets
    their positions, images loaded as RGB unless a loader says otherwise."""
    class ImageFolder:
        def __init__(self, root, loader=None, target_transform=None, transform=None):
            self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
            self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                            for f in sorted(os.listdir(os.path.join(root, c)))]
            self.loader = loader or (lambda p: Image.open(p).convert("RGB"))
            self.target_transform = target_transform

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, k):
            path, target = self.samples[k]
            return self.loader(path), self.target_transform(target) if self.target_transform else target

    tv = types.ModuleType("torchvision")
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.ImageFolder = ImageFolder
    return tv


@pytest.fixture
def exported(tmp_path):
    shards = make_fake_shards(tmp_path / "shards", labels=LABELS, per_class={"train": 3, "val": 1, "test": 1})
    export_blocks(shards, tmp_path / "blocks", fmt="png", progress=False)
    return tmp_path / "blocks"


def test_classes_txt_and_export_json_give_the_shards_label_order(exported):
    classes = (exported / "classes.txt").read_text(encoding="utf-8").split()
    assert classes == ["angry", "happy", "surprise", "neutral"]  # the canonical order, as training indexes them
    record = json.loads((exported / "export.json").read_text(encoding="utf-8"))
    assert record["classes"] == classes and "classes.txt" in record["files"]


def test_readme_imagefolder_example_maps_folder_indices_to_the_models(exported, tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "ImageFolder" in b]
    assert len(snippet.strip().splitlines()) <= 3
    try:
        import torchvision  # noqa: F401
    except ImportError:
        fake = _fake_torchvision()
        monkeypatch.setitem(sys.modules, "torchvision", fake)
        monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the project's own documentation
    dataset = next(v for v in scope.values() if type(v).__name__ == "ImageFolder")
    classes = (exported / "classes.txt").read_text(encoding="utf-8").split()
    assert dataset.classes.index("neutral") != classes.index("neutral")  # the map is needed
    seen = set()
    for k in range(len(dataset)):
        image, target = dataset[k]
        folder = Path(dataset.samples[k][0]).parent.name
        assert target == classes.index(folder) and image.mode == "L" and np.asarray(image).ndim == 2
        seen.add(folder)
    assert seen == set(LABELS)
