"""`faceblocks preview`: the contact sheet's file, size, sample choice and block outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shardfakes import edit_shards, make_fake_shards

from cli import main
from prepro.preview import block_outline, contact_sheet, pick
from prepro.errors import InputError
from prepro.faces import CutSettings, FaceCutter
from prepro.landmarks import LandmarkModelFile
from prepro.shards import ShardReader


@pytest.fixture()
def shards(tmp_path):
    root = make_fake_shards(tmp_path / "shards", labels=("happy", "sad"),
                            per_class={"train": 12, "val": 4, "test": 4}, shard_size=7)

    def varied_quality(f, k: int) -> None:
        n = f["quality"].shape[0]
        f["quality"][...] = ((np.arange(k, k + n) * 37) % 101 / 100.0).astype(np.float32)

    return edit_shards(root, varied_quality)


def _png_size(path):
    import cv2

    img = cv2.imread(str(path))
    assert img is not None
    return img.shape[1], img.shape[0]


def test_contact_sheet_default(shards):
    path = contact_sheet(shards)
    assert path == shards / "preview.png" and path.is_file()
    w, h = _png_size(path)
    assert 1000 <= w <= 1600 and 400 <= h <= 1000  # 24 samples, 5 per row
    assert path.stat().st_size < 1_000_000
    assert not list(shards.glob("*.tmp"))


def test_contact_sheet_options(shards, tmp_path):
    out = contact_sheet(shards, tmp_path / "sub" / "few.png", split="train", labels=["happy"], count=3,
                        seed=1)
    w, h = _png_size(out)
    assert w < 1000 and h < 300  # one row of three
    a = pick(ShardReader(shards), 5, seed=3)
    b = pick(ShardReader(shards), 5, seed=3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 5
    with pytest.raises(InputError, match="unknown label"):
        contact_sheet(shards, tmp_path / "x.png", labels=["joy"])


def test_worst_picks_lowest_quality(shards):
    reader = ShardReader(shards)
    quality = np.array([float(reader.get(i, ("quality",))["quality"]) for i in range(len(reader))])
    idx = pick(reader, 6, worst=True)
    assert np.allclose(quality[idx], np.sort(quality)[:6])
    assert list(quality[idx]) == sorted(quality[idx])
    reader = ShardReader(shards, split="val")
    q_val = np.array([float(reader.get(i, ("quality",))["quality"]) for i in range(len(reader))])
    assert np.allclose(q_val[pick(reader, 2, worst=True)], np.sort(q_val)[:2])


def test_block_outline_maps_through_affines():
    # original -> block: scale 2 and shift; original -> face: scale 0.5
    block = np.array([[2, 0, -20], [0, 2, -10]], np.float32)
    face = np.array([[0.5, 0, 0], [0, 0.5, 0]], np.float32)
    quad = block_outline(block, (8, 16), face)
    # block (0,0) is original (10,5) -> face (5, 2.5); block (16,8) is original (18,9) -> face (9,4.5)
    np.testing.assert_allclose(quad, [[5, 2.5], [9, 2.5], [9, 4.5], [5, 4.5]])
    assert block_outline(np.zeros((2, 3)), (8, 16), face) is None


def test_cli_preview(shards, tmp_path):
    runner = CliRunner()
    out = tmp_path / "worst.png"
    r = runner.invoke(main, ["preview", str(shards), "--worst", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and str(out) in r.output
    w, _ = _png_size(out)
    assert w < 1300  # four tiles in one row
    r = runner.invoke(main, ["preview", str(shards), "--split", "test", "--label", "happy,sad",
                             "--count", "5"])
    assert r.exit_code == 0, r.output
    assert (shards / "preview-test-happy+sad.png").is_file()  # its own name: another request, another file
    r = runner.invoke(main, ["preview", str(shards)])
    assert r.exit_code == 0 and (shards / "preview.png").is_file()
    r = runner.invoke(main, ["preview", str(shards), "--seed", "3"])  # our own sheet: replaced
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["preview", str(shards), "--label", "joy"])
    assert r.exit_code == 1 and "allowed" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["preview", "-h"])
    assert r.exit_code == 0 and "Example" in r.output


# ------------------------------------------------------------------------------------------------
# raw images: what preprocess would cut, before running it


@pytest.fixture(scope="module")
def raw_images(tmp_path_factory):
    from PIL import Image

    from prepro.synthetic import make_sample

    root = tmp_path_factory.mktemp("raw")
    make_sample(root / "sample", per_class=2, expressions=("happy", "sad"))  # HOG finds all four faces
    (root / "sample" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(root / "sample" / "blank.png")
    return root / "sample"


def test_contact_sheet_of_raw_images(raw_images, tmp_path):
    from prepro.preview import contact_sheet_images

    cutter = FaceCutter(CutSettings(face_mode="auto"), LandmarkModelFile.default())
    sheet = contact_sheet_images([str(raw_images)], tmp_path / "raw.png", cutter)
    assert sheet.images == sheet.shown == 6 and sheet.path.is_file()
    assert sorted(Path(p).name for p, _ in sheet.failures) == ["blank.png", "broken.jpg"]
    assert any("no face" in why for _, why in sheet.failures)
    w, h = _png_size(sheet.path)
    assert w > 1000 and h > 300  # two rows: 5 + 1
    few = contact_sheet_images([str(raw_images / "happy" / "*.png")], tmp_path / "few.png", cutter, count=1,
                               seed=2)
    assert few.images == 2 and few.shown == 1 and not few.failures
    worst = contact_sheet_images([str(raw_images)], tmp_path / "worst.png", cutter, count=3, worst=True)
    assert worst.shown == 3 and len(worst.failures) == 2  # failures come first
    with pytest.raises(InputError, match="no such file"):
        contact_sheet_images([str(tmp_path / "nothing-*.png")], tmp_path / "x.png", cutter)
    with pytest.raises(InputError, match="count"):
        contact_sheet_images([str(raw_images)], tmp_path / "x.png", cutter, count=0)


def test_cli_preview_raw_images(raw_images, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sheet.png"
    r = runner.invoke(main, ["preview", str(raw_images), "--out", str(out), "--face", "detect"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "broken.jpg: " in r.output and "(6 of 6 images, 2 without blocks)" in r.output
    r = runner.invoke(main, ["preview", str(raw_images), "--split", "test"])
    assert r.exit_code == 2 and "--split" in r.output and "shard folder" in r.output
