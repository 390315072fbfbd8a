"""AffectNet's valence and arousal kept per sample: read from the columns its description names,
NaN where a cell is empty, a bad cell a listed failure; in the shards, `inspect` and exports.
The tree is crafted (random images, invented rows)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.export import export_blocks
from prepro.pipeline import run_preprocess
from prepro.readers import list_source
from prepro.shards import ShardReader, summarize
from prepro.specs import load_spec

HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,"
          "arousal")
ROWS = [("1/a.jpg", "0", "0.5", "-0.25"),      # neutral
        ("1/b.jpg", "1", "", "0.75"),          # happy, no valence given
        ("1/c.jpg", "7", "-1", "1"),           # contempt, at the ends of the range
        ("1/d.jpg", "2", "inf", "0"),          # not a number
        ("1/e.jpg", "3", "0.1", "-2")]         # outside -1..1


def _affectnet(root: Path) -> Path:
    images = root / "Manually_Annotated_Images"
    lines = [HEADER]
    for k, (path, code, valence, arousal) in enumerate(ROWS):
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / path), np.random.default_rng(k).integers(0, 256, (96, 96, 3), dtype=np.uint8))
        lines.append(f"{path},8,8,80,80,{';'.join(['40.0'] * 136)},{code},{valence},{arousal}")
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (lists / "training.csv").write_text("\n".join(lines) + "\n")
    (lists / "validation.csv").write_text(HEADER + "\n")
    return root


def test_the_listing_keeps_valence_and_arousal(tmp_path):
    listing = list_source(str(_affectnet(tmp_path / "AffectNet")), spec=load_spec("affectnet"))
    values = {it.source_id: dict(it.annotations) for it in listing.items}
    assert values["1/a.jpg"] == {"valence": 0.5, "arousal": -0.25}
    assert np.isnan(values["1/b.jpg"]["valence"]) and values["1/b.jpg"]["arousal"] == 0.75
    reasons = {f.source: f.reason for f in listing.failures}
    assert reasons["1/d.jpg"].startswith("bad valence: 'inf' is not a number")
    assert reasons["1/e.jpg"].startswith("bad arousal: -2 is outside -1..1")


def test_shards_inspect_and_exports_keep_them(tmp_path):
    from cli import main

    out = tmp_path / "out"
    run_preprocess(str(_affectnet(tmp_path / "AffectNet")), str(out), PreprocessConfig(dataset="affectnet"),
                   PreprocessRun(jobs=1), progress=False)
    reader = ShardReader(out)
    assert reader.optional_fields == ("valence", "arousal")
    data = reader.load_all(("source", "valence", "arousal"))
    got = {s: (v, a) for s, v, a in zip(data["source"].astype(str), data["valence"], data["arousal"])}
    assert data["valence"].dtype == np.float32 and got["1/c.jpg"] == (-1, 1) and np.isnan(got["1/b.jpg"][0])
    s = summarize(out)["sample_values"]
    assert s["valence"] == {"given": 2, "missing": 1, "min": -1.0, "mean": -0.25, "max": 0.5}
    shown = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).output)
    assert shown["sample_values"]["arousal"]["given"] == 3
    export_blocks(out, tmp_path / "npz", fmt="npz", progress=False)
    npz = np.load(tmp_path / "npz" / "train.npz", allow_pickle=False)
    assert sorted(np.round(npz["arousal"], 2)) == [-0.25, 0.75, 1.0]

