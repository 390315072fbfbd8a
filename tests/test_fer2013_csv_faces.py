"""The FER2013 CSV and the FER2013 folders are one dataset, pre-cropped: without --face both get the
same face handling (README says which, and why it is not `aligned`), checked on crafted 48x48 rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.pipeline import run_preprocess
from prepro.shards import ShardReader
from prepro.synthetic import make_sample

ROOT = Path(__file__).resolve().parents[1]


def _crops(tmp_path: Path) -> list[np.ndarray]:
    """Two synthetic face crops (the detector may find these) and two of noise (it finds none)."""
    make_sample(tmp_path / "sample", per_class=1, expressions=("happy", "sad"))
    faces = [np.asarray(Image.open(p).convert("L").resize((48, 48))) for p in sorted((tmp_path / "sample").rglob("*.png"))]
    noise = [np.random.default_rng(k).integers(0, 255, (48, 48), dtype=np.uint8) for k in range(2)]
    return faces + noise


def _box_methods(out: Path) -> dict[int, str]:
    reader = ShardReader(out)
    rows = [reader.get(k, fields=("box_method", "label")) for k in range(len(reader))]
    names = reader.manifest.box_methods
    return {int(r["label"]): names[int(r["box_method"])] for r in rows}


def test_csv_rows_are_cut_as_the_fer2013_folders_are(tmp_path):
    crops = _crops(tmp_path)
    codes = (3, 4, 0, 6)  # happy, sad, angry, neutral: one crop each
    lines = ["emotion,pixels,Usage"] + [f"{c},{' '.join(map(str, a.ravel()))},Training" for c, a in zip(codes, crops)]
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    names = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    for k, (c, a) in enumerate(zip(codes, crops)):
        folder = tmp_path / "fer" / "train" / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(folder / f"Training_{k}.png")
    csv_run = run_preprocess(str(tmp_path / "fer2013.csv"), str(tmp_path / "out-csv"), PreprocessConfig(),
                             PreprocessRun(jobs=1), progress=False)
    folder_run = run_preprocess(str(tmp_path / "fer"), str(tmp_path / "out-folder"), PreprocessConfig(dataset="fer2013"),
                                PreprocessRun(jobs=1), progress=False)
    assert csv_run.samples == folder_run.samples == 4
    csv_params = ShardReader(tmp_path / "out-csv").manifest.params
    assert csv_params["face"] == ShardReader(tmp_path / "out-folder").manifest.params["face"]
    assert _box_methods(tmp_path / "out-csv") == _box_methods(tmp_path / "out-folder")
    assert {_box_methods(tmp_path / "out-csv")[c] for c in (0, 6)} == {"estimated_fallback"}  # noise: no face


def test_readme_says_how_both_are_cut_and_why():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "faceblocks preprocess fer2013.csv.gz out/fer2013-csv --face aligned" in readme
    assert "The FER2013 CSV and folders get the same default, `auto`" in readme
