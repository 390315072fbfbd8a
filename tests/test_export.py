"""`faceblocks export`: png / npz / hdf5 re-read against the shards, filters, safe names, overwrite."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from shardfakes import edit_shards, make_fake_shards

from cli import main
from prepro.errors import DataError, InputError, OutputError
from prepro.export import export_blocks, safe_component, sample_id, source_stem
from prepro.faces import BOX_METHODS
from prepro.outputs import LOCK_NAME, sha256_file
from prepro.shards import Manifest, verify

METHODS = list(BOX_METHODS)  # the fake samples cycle through the first three: hog, cnn, estimated
# HDF5 strings cannot hold NUL (test_names covers it); other control characters they can.
HOSTILE = ["../../etc/passwd", "/etc/shadow", "a/../../b", "bad\x01name\n.jpg", "\x1b[31mred\ttab\r",
           "..\\..\\x.png", "..", ".hidden", "C:\\Windows\\system32\\cmd.exe", "train/../../../escape.jpg",
           "\u00e9t\u00e9/\u263a.png"]


def _patch_shards(root: Path, sources=None) -> Path:
    """Give the fake shards varied quality, box methods and (optionally hostile) sources."""
    assert Manifest.load(root).box_methods == METHODS

    def edit(f, k: int) -> None:
        idx = np.arange(k, k + f["label"].shape[0])
        f["quality"][...] = ((idx * 37) % 100 / 100.0).astype(np.float32)
        f["box_method"][...] = (idx % 3).astype(np.uint8)
        if sources is not None:
            del f["source"]
            f.create_dataset("source", data=[sources[i % len(sources)] for i in idx],
                             dtype=h5py.string_dtype("utf-8"))

    edit_shards(root, edit)
    assert verify(root).whole
    return root


@pytest.fixture()
def shards(tmp_path):
    root = make_fake_shards(tmp_path / "shards", labels=("happy", "sad"),
                            per_class={"train": 6, "val": 3, "test": 2}, shard_size=5, unlabelled=2)
    return _patch_shards(root)


def _everything(root: Path) -> dict[str, np.ndarray]:
    """Every dataset of every shard, concatenated in folder order."""
    m = Manifest.load(root)
    parts: dict[str, list] = {}
    for seg in m.shards:
        with h5py.File(root / seg.file, "r") as f:
            for name in f:
                parts.setdefault(name, []).append(f[name][()])
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_png_pixels_equal_blocks_and_csv(shards, tmp_path):
    import cv2

    out = tmp_path / "png"
    s = export_blocks(shards, out, fmt="png", regions=("eyes", "mouth", "face", "landmarks"), progress=False)
    every = _everything(shards)
    m = Manifest.load(shards)
    n = len(every["label"])
    assert s.samples == n == 2 * (6 + 3 + 2) + 2
    assert s.counts["test"]["unlabelled"] == 2 and s.counts["train"] == {"happy": 6, "sad": 6}
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "source", "subject", "split", "label", "eyes", "mouth", "face",
                             "landmarks_row", "box_method", "quality"]
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    lm = np.load(out / "landmarks.npz", allow_pickle=False)
    for r in rows:
        i = int(r["id"].split("_")[2])  # the sample's position in the shard folder
        lab = int(every["label"][i])
        assert r["label"] == (m.label_names[lab] if lab >= 0 else "unlabelled")
        assert r["split"] == m.split_names[int(every["split"][i])]
        assert r["source"] == every["source"][i].decode()
        assert r["box_method"] == METHODS[int(every["box_method"][i])]
        assert np.float32(r["quality"]) == every["quality"][i]
        for region in ("eyes", "mouth", "face"):
            assert r[region] == f"{region}/{r['split']}/{r['label']}/{r['id']}.png"
            img = cv2.imread(str(out / r[region]), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(img, every[region][i])
        j = int(r["landmarks_row"])
        assert lm["ids"][j] == r["id"]
        np.testing.assert_array_equal(lm["landmarks"][j], every["landmarks"][i])
        np.testing.assert_array_equal(lm["face_affine"][j], every["face_affine"][i])
    # ImageFolder layout: OUT/<region>/<split>/<class>/<file>.png and nothing else in there
    for region in ("eyes", "mouth", "face"):
        for split_dir in (out / region).iterdir():
            assert split_dir.name in m.split_names
            for cls in split_dir.iterdir():
                assert cls.is_dir() and cls.name in m.label_names + ["unlabelled"]
                assert all(p.suffix == ".png" and p.is_file() for p in cls.iterdir())
    record = json.loads((out / "export.json").read_text())
    assert record["samples"] == n and sorted(record["files"]) == sorted(s.files)
    assert all(sha256_file(out / f) == digest for f, digest in record["files"].items())  # provably its own


def test_npz_arrays_equal(shards, tmp_path):
    out = tmp_path / "npz"
    s = export_blocks(shards, out, fmt="npz", regions="eyes,mouth,landmarks", progress=False)
    assert sorted(s.files) == ["test.npz", "train.npz", "val.npz"]
    every = _everything(shards)
    m = Manifest.load(shards)
    for si, split in enumerate(m.split_names):
        z = np.load(out / f"{split}.npz", allow_pickle=False)
        sel = np.flatnonzero(every["split"] == si)
        assert "face" not in z.files
        for name in ("eyes", "mouth", "landmarks", "eyes_affine", "mouth_affine", "face_affine"):
            np.testing.assert_array_equal(z[name], every[name][sel])
        np.testing.assert_array_equal(z["labels"], every["label"][sel].astype(np.int64))
        np.testing.assert_array_equal(z["quality"], every["quality"][sel])
        assert list(z["label_names"]) == m.label_names
        assert list(z["sources"]) == [x.decode() for x in every["source"][sel]]
        assert list(z["box_method"]) == [METHODS[i] for i in every["box_method"][sel]]
        assert all(z[k].dtype.kind in "biuf" or z[k].dtype.kind == "U" for k in z.files)
        assert len(set(z["ids"])) == len(sel)


def test_hdf5_datasets_equal_and_attributes(shards, tmp_path):
    out = tmp_path / "h5"
    s = export_blocks(shards, out, fmt="hdf5", splits=["train"], min_quality=0.3, progress=False)
    assert s.files == ["blocks.h5"] and not list(out.glob("*.tmp"))
    every = _everything(shards)
    keep = (every["split"] == 0) & (every["quality"] >= 0.3)
    first = sorted((shards / "shards").glob("*.h5"))[0]
    with h5py.File(first, "r") as src, h5py.File(out / "blocks.h5", "r") as f:
        assert set(f) == set(src)
        assert set(src.attrs) <= set(f.attrs)
        assert f.attrs["n_samples"] == keep.sum() == s.samples
        assert f.attrs["shard_split"] == "train"
        assert json.loads(f.attrs["label_names"]) == json.loads(src.attrs["label_names"])
        for name in f:
            assert f[name].dtype == src[name].dtype and f[name].shape[1:] == src[name].shape[1:]
            np.testing.assert_array_equal(f[name][()], every[name][keep])
        assert f["eyes"].chunks == (1,) + f["eyes"].shape[1:]


def test_filters(shards, tmp_path):
    every = _everything(shards)
    m = Manifest.load(shards)
    happy = m.label_names.index("happy")
    s = export_blocks(shards, tmp_path / "a", fmt="npz", splits="train,val", labels=["happy"], progress=False)
    assert set(s.counts) == {"train", "val"} and s.counts == {"train": {"happy": 6}, "val": {"happy": 3}}
    s = export_blocks(shards, tmp_path / "b", fmt="npz", box_methods=["hog"], min_quality=0.5,
                      progress=False)
    want = (every["box_method"] == 0) & (every["quality"] >= 0.5)
    assert s.samples == want.sum() > 0
    got = np.concatenate([np.load(tmp_path / "b" / f, allow_pickle=False)["quality"] for f in s.files])
    assert got.min() >= 0.5
    s = export_blocks(shards, tmp_path / "c", fmt="png", labels="unlabelled", progress=False)
    assert s.counts == {"test": {"unlabelled": 2}}
    assert len(list((tmp_path / "c" / "eyes" / "test" / "unlabelled").glob("*.png"))) == 2
    assert not (tmp_path / "c" / "eyes" / "train").exists()
    assert (every["label"] == happy).sum() == 11
    with pytest.raises(InputError, match="allowed: angry"):
        export_blocks(shards, tmp_path / "d", labels=["joy"], progress=False)
    with pytest.raises(InputError, match="allowed: train, val, test"):
        export_blocks(shards, tmp_path / "d", splits=["../x"], progress=False)
    with pytest.raises(InputError, match="allowed"):
        export_blocks(shards, tmp_path / "d", regions="eyes,nose", progress=False)
    with pytest.raises(InputError, match="allowed: hog"):
        export_blocks(shards, tmp_path / "d", box_methods="detector", progress=False)  # an old method name
    with pytest.raises(InputError, match="no sample"):
        export_blocks(shards, tmp_path / "d", min_quality=1.0, box_methods="estimated_fallback",
                      labels="contempt", progress=False)
    assert not (tmp_path / "d").exists()


def test_hostile_sources_stay_inside(tmp_path):
    root = make_fake_shards(tmp_path / "data" / "shards", labels=("happy", "sad"),
                            per_class={"train": 5, "val": 3, "test": 2}, shard_size=4)
    _patch_shards(root, sources=HOSTILE)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "data" / "out"
    for fmt in ("png", "npz", "hdf5"):
        export_blocks(root, out / fmt, fmt=fmt, regions="eyes,mouth,face,landmarks", progress=False)
    after = {p for p in tmp_path.rglob("*")}
    new = {p for p in after - before - {out} if p.name != LOCK_NAME}  # the lock file is faceblocks' own
    assert new and all(out in p.parents for p in new), sorted(str(p) for p in new if out not in p.parents)
    for p in new:
        rel = p.relative_to(out)
        assert all(part and not part.startswith(".") and ".." not in part for part in rel.parts)
        assert all(c.isprintable() and c not in "\\:" for c in str(rel))
    with open(out / "png" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows} == set(HOSTILE)  # the data is kept, only names are cleaned
    assert len({r["id"] for r in rows}) == len(rows)
    assert any(r["id"].endswith("_passwd") for r in rows)
    z = np.load(out / "npz" / "train.npz", allow_pickle=False)
    assert set(z["sources"]) <= set(HOSTILE)


def test_hostile_label_names_in_manifest_are_refused(shards, tmp_path):
    m = Manifest.load(shards)
    m.label_names[m.label_names.index("happy")] = "../../happy"
    m.save(shards)
    with pytest.raises(DataError, match="folder name"):
        export_blocks(shards, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "happy").exists()


def test_names():
    assert safe_component("../../etc/passwd") == "etc_passwd"
    assert source_stem("../../etc/passwd") == "passwd"
    assert source_stem("..\\..\\x.png") == "x"
    assert source_stem("fer2013.csv:row=17") == "fer2013_csv_row_17"
    assert source_stem(".hidden") == "hidden"
    assert source_stem("bad\x00name\n.jpg") == "bad_name"
    assert source_stem("..") == ""
    assert sample_id("train", "happy", 123, "train/happy/Training_1.jpg") == "train_happy_000123_Training_1"
    assert sample_id("val", "sad", 5, "../..") == "val_sad_000005"


def test_refuses_without_overwrite_and_replaces_own_files(shards, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="--overwrite"):
        export_blocks(shards, out, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == ["notes.txt"]
    s1 = export_blocks(shards, out, overwrite=True, progress=False)
    with pytest.raises(OutputError, match="--overwrite"):
        export_blocks(shards, out, progress=False)
    s2 = export_blocks(shards, out, labels="sad", overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    pngs = {str(p.relative_to(out)).replace(os.sep, "/") for p in out.rglob("*.png")}
    assert pngs == {f for f in s2.files if f.endswith(".png")}  # no file of the first export is left
    assert set(s2.removed) == set(s1.files) - set(s2.files)
    assert not (out / "eyes" / "train" / "happy").exists()  # emptied class folders go too


def test_overwrite_keeps_files_it_cannot_prove_it_wrote(shards, tmp_path):
    out = tmp_path / "o"
    s1 = export_blocks(shards, out, progress=False)
    happy = sorted(f for f in s1.files if "/happy/" in f)
    changed, user = out / happy[0], out / "eyes" / "train" / "happy" / "mine.png"
    changed.write_bytes(b"edited since the export")
    user.write_bytes(b"a file the export never wrote")
    # A record that lists a file outside OUT (with its true checksum) removes nothing there.
    (tmp_path / "outside.txt").write_text("not the export's")
    record = json.loads((out / "export.json").read_text())
    record["files"]["../outside.txt"] = sha256_file(tmp_path / "outside.txt")
    (out / "export.json").write_text(json.dumps(record))
    s2 = export_blocks(shards, out, labels="sad", overwrite=True, progress=False)
    assert changed.read_bytes() == b"edited since the export" and happy[0] not in s2.removed
    assert user.is_file() and (tmp_path / "outside.txt").is_file()
    assert set(s2.removed) == set(s1.files) - set(s2.files) - {happy[0]}


def test_out_inside_the_shard_folder_is_refused(shards):
    before = sorted(p for p in shards.rglob("*"))
    for out in (shards, shards / "export", shards / "shards" / "x"):
        with pytest.raises(OutputError, match="must not be the shard folder"):
            export_blocks(shards, out, progress=False)
    assert sorted(p for p in shards.rglob("*")) == before


def test_damaged_shard_is_refused(shards, tmp_path):
    p = sorted((shards / "shards").glob("train-*.h5"))[0]
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match=f"{p.name} is checksum mismatch"):
        export_blocks(shards, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_cli_export(shards, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(main, ["export", str(shards), str(out), "--format", "npz", "--split", "train",
                             "--split", "val", "--label", "happy,sad", "--box-method", "hog",
                             "--box-method", "estimated", "--min-quality", "0.1", "-q"])
    assert r.exit_code == 0, r.output
    assert "samples exported" in r.output
    assert sorted(p.name for p in out.glob("*.npz")) == ["train.npz", "val.npz"]
    r = runner.invoke(main, ["export", str(shards), str(out), "-q"])
    assert r.exit_code == 1 and "--overwrite" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["export", str(shards), str(out), "-q", "--overwrite", "--regions", "eyes"])
    assert r.exit_code == 0, r.output
    assert (out / "eyes").is_dir() and not (out / "mouth").exists() and not (out / "train.npz").exists()
    r = runner.invoke(main, ["export", str(shards), str(tmp_path / "x"), "--label", "joy"])
    assert r.exit_code == 1 and "allowed" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["export", "-h"])
    assert r.exit_code == 0 and "Example" in r.output


def test_a_full_disk_leaves_no_partial_png(shards, tmp_path, monkeypatch):
    """The disk fills while a PNG is written: the message says so, and the cut file is removed."""
    import errno

    real = Path.write_bytes
    calls = {"n": 0}

    def filling(self, data):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(self, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    with pytest.raises(OutputError, match="No space left on device"):
        export_blocks(shards, tmp_path / "out", fmt="png", progress=False)
    written = [p for p in (tmp_path / "out").rglob("*.png")]
    assert len(written) == 2 and all(p.stat().st_size > 0 for p in written)
    for p in written:
        with open(p, "rb") as f:
            assert f.read()[-8:-4] == b"IEND"  # complete files only
