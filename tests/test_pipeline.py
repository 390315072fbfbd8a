"""End-to-end preprocessing: every input accounted for, jobs-invariant output, resume, refusal."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from prepro import shards
from prepro.pipeline import PreprocessConfig, PreprocessError, run_preprocess

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _face_like(seed: int, size: int = 48) -> np.ndarray:
    """A blurry face-ish pattern; in `aligned` mode any image gets landmarks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 120 + 60 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 6)
    for cx in (0.33, 0.67):  # eyes
        img -= 70 * np.exp(-((xx - cx) ** 2 + (yy - 0.4) ** 2) * 300)
    img -= 60 * np.exp(-((xx - 0.5) ** 2 * 40 + (yy - 0.75) ** 2 * 400))  # mouth
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def make_source(root: Path, per_class: int = 4, bad: bool = True) -> dict[str, str]:
    """A class-folder tree of good images plus (optionally) one of each kind of bad input.

    Returns {file name: expected outcome} for the bad ones ("ok" = must be written).
    """
    labels = ["happy", "sad", "surprise"]
    k = 0
    for lab in labels:
        (root / lab).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_face_like(k)).save(root / lab / f"{lab}_{i:02d}.png")
            k += 1
    if not bad:
        return {}
    d = root / "happy"
    expect = {}
    (d / "zero.jpg").write_bytes(b"")
    expect["zero.jpg"] = "fail"
    Image.fromarray(_face_like(100)).save(d / "full.jpg", quality=95)
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "full.jpg").unlink()
    expect["truncated.jpg"] = "fail"
    (d / "text.jpg").write_text("this is not an image")
    expect["text.jpg"] = "fail"
    rgba = np.dstack([np.dstack([_face_like(101)] * 3), np.full((48, 48), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    expect["rgba.png"] = "ok"
    Image.fromarray(_face_like(102).astype(np.uint16) * 257).save(d / "sixteen.png")
    expect["sixteen.png"] = "ok"
    Image.fromarray(np.dstack([_face_like(103)] * 3), "RGB").convert("CMYK").save(d / "cmyk.jpg")
    expect["cmyk.jpg"] = "ok"
    _png_header_only(d / "huge.png", 20000, 20000)
    expect["huge.png"] = "fail"
    Image.fromarray(_face_like(104)).save(d / "visage_étonné_表情.png")
    expect["visage_étonné_表情.png"] = "ok"
    (root / "confused").mkdir()
    Image.fromarray(_face_like(105)).save(root / "confused" / "x.png")
    expect["x.png"] = "fail"
    return expect


def _read_all(out: Path) -> dict[str, np.ndarray]:
    m = shards.Manifest.load(out)
    parts: dict[str, list] = {}
    for seg in m.shard_segments():
        with h5py.File(out / seg.file, "r") as f:
            for k in f.keys():
                parts.setdefault(k, []).append(f[k][()])
    return {k: np.concatenate(v) for k, v in parts.items()}


CFG = PreprocessConfig(face_mode="aligned", shard_size=5)


def test_every_input_accounted_for(tmp_path):
    expect = make_source(tmp_path / "src")
    s = run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    assert s.complete
    summary = shards.summarize(tmp_path / "out")
    failed = {Path(f["source"]).name: f["reason"] for f in summary["failures"]}
    written = {Path(x.decode() if isinstance(x, bytes) else x).name for x in _read_all(tmp_path / "out")["source"]}
    for name, outcome in expect.items():
        if outcome == "ok":
            assert name in written, (name, failed.get(name))
        else:
            assert name in failed and name not in written, name
    assert "confused" in failed["x.png"] and "happy" in failed["x.png"]  # names the allowed labels
    assert "40" in failed["huge.png"]  # says what the limit is
    assert summary["samples"] + summary["failed"] == summary["items"] == 12 + len(expect)
    assert summary["samples"] == s.samples == 12 + sum(v == "ok" for v in expect.values())


def test_shard_contents_and_attributes(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    m = shards.Manifest.load(tmp_path / "out")
    seg = m.shard_segments()[0]
    with h5py.File(tmp_path / "out" / seg.file, "r") as f:
        assert f["eyes"].shape[1:] == (32, 96) and f["eyes"].dtype == np.uint8
        assert f["mouth"].shape[1:] == (32, 64) and f["face"].shape[1:] == (64, 64)
        assert f["landmarks"].shape[1:] == (68, 2)
        assert f.attrs["format_version"] == shards.FORMAT_VERSION
        assert json.loads(f.attrs["label_names"])[3] == "happy"
        assert json.loads(f.attrs["params"])["face_mode"] == "aligned"
        assert len(f.attrs["predictor_sha256"]) == 64
        assert f.attrs["faceblocks_version"]
        names = json.loads(f.attrs["box_methods"])
        assert all(names[i] == "whole_image" for i in f["box_method"][()])
        assert np.all((f["quality"][()] >= 0) & (f["quality"][()] <= 1))
        assert f["eyes"][()].std() > 0  # not empty blocks
    # sizes: 12 items split 80/10/10 -> shards of at most 5 per split
    assert all(s.n_samples <= 5 for s in m.segments)
    assert m.complete and m.n_samples == 12


def test_same_output_for_one_and_two_jobs(tmp_path):
    make_source(tmp_path / "src")
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "a"), CFG, jobs=1, progress=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "b"), CFG, jobs=2, chunk_size=3, progress=False)
    ma, mb = shards.Manifest.load(tmp_path / "a"), shards.Manifest.load(tmp_path / "b")
    assert [s.to_dict() for s in ma.segments] == [s.to_dict() for s in mb.segments]  # incl. sha256
    a, b = _read_all(tmp_path / "a"), _read_all(tmp_path / "b")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_after_crash_mid_run(tmp_path, monkeypatch):
    make_source(tmp_path / "src", per_class=6)
    cfg = PreprocessConfig(face_mode="aligned", shard_size=2)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "ref"), cfg, jobs=1, progress=False)

    import prepro.pipeline as pipeline
    real = pipeline.write_shard
    calls = {"n": 0}

    def crashing(path, samples, attrs):
        calls["n"] += 1
        if calls["n"] == 4:
            # die after the shard's temporary file exists but before it is renamed
            Path(str(path) + ".tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(path, samples, attrs)

    monkeypatch.setattr(pipeline, "write_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), cfg, jobs=1, progress=False)
    assert len(shards.Manifest.load(tmp_path / "out").shard_segments()) == 3
    monkeypatch.setattr(pipeline, "write_shard", real)
    s = run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), cfg, jobs=2, progress=False)
    assert s.complete and s.written_now == s.samples - 6
    ref, out = _read_all(tmp_path / "ref"), _read_all(tmp_path / "out")
    for k in ref:
        np.testing.assert_array_equal(ref[k], out[k])
    assert shards.verify(tmp_path / "out").whole
    # nothing doubled: a third run does nothing
    again = run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), cfg, jobs=1, progress=False)
    assert again.written_now == 0 and again.samples == s.samples


def test_resume_after_kill_9(tmp_path):
    make_source(tmp_path / "src", per_class=40, bad=False)
    cmd = [sys.executable, str(ROOT / "cli.py"), "preprocess", str(tmp_path / "src"), str(tmp_path / "out"),
           "--face", "aligned", "--shard-size", "3", "--chunk-size", "2", "-j", "1", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(shards.Manifest.load(tmp_path / "out").segments) >= 2:
                break
        except shards.ShardError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = shards.Manifest.load(tmp_path / "out")
    assert not m.complete, "the run finished before it could be killed; make the fixture larger"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = tmp_path / "ref"
    run_preprocess(str(tmp_path / "src"), str(ref), PreprocessConfig(face_mode="aligned", shard_size=3),
                   jobs=1, progress=False)
    a, b = _read_all(ref), _read_all(tmp_path / "out")
    assert len(b["source"]) == 120
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert shards.verify(tmp_path / "out").whole


def test_other_parameters_refused_unless_overwrite(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    other = PreprocessConfig(face_mode="aligned", shard_size=5, blocks=CFG.blocks.__class__(eyes_size=(24, 72)))
    with pytest.raises(PreprocessError, match="eyes_size.*--overwrite"):
        run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), other, jobs=1, progress=False)
    s = run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), other, jobs=1, progress=False,
                       overwrite=True)
    assert s.samples == 12
    assert shards.Manifest.load(tmp_path / "out").block_sizes["eyes"] == [24, 72]


def test_foreign_non_empty_folder_refused(tmp_path):
    make_source(tmp_path / "src", bad=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(PreprocessError, match="not empty"):
        run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False, overwrite=True)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"  # never deletes what is not ours


def test_csv_source_with_bad_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for i in range(10):
        px = " ".join(str(v) for v in _face_like(i).ravel())
        rows.append(f"{i % 7},{px},{['Training', 'PublicTest', 'PrivateTest'][i % 3]}")
    rows[3] = "2," + " ".join(["7"] * 2303) + ",Training"  # wrong pixel count
    rows[5] = "4," + " ".join(["x"] + ["7"] * 2303) + ",Training"  # not a number
    rows[7] = "9," + " ".join(str(v) for v in rng.integers(0, 255, 2304)) + ",Training"  # unknown label
    (tmp_path / "fer.csv").write_text("\n".join(rows) + "\n")
    s = run_preprocess(str(tmp_path / "fer.csv"), str(tmp_path / "out"), CFG, jobs=2, progress=False)
    summary = shards.summarize(tmp_path / "out")
    assert s.samples == 7 and summary["failed"] == 3
    reasons = " | ".join(f["reason"] for f in summary["failures"])
    assert "2304" in reasons and "9" in reasons
    assert set(summary["splits"]) == {"train", "val", "test"}


def test_verify_detects_damage(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    assert shards.verify(tmp_path / "out").whole
    segs = shards.Manifest.load(tmp_path / "out").shard_segments()
    p = tmp_path / "out" / segs[0].file
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    (tmp_path / "out" / segs[1].file).unlink()
    r = shards.verify(tmp_path / "out")
    assert not r.whole
    text = "\n".join(r.problems)
    assert segs[0].file in text and "checksum" in text
    assert segs[1].file in text and "missing" in text


def test_shard_reader_views(tmp_path):
    make_source(tmp_path / "src", per_class=6, bad=False)
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), CFG, jobs=1, progress=False)
    everything = shards.ShardReader(tmp_path / "out")
    assert len(everything) == 18
    train = shards.ShardReader(tmp_path / "out", split="train", labels=["happy", "sad"])
    assert 0 < len(train) < 18
    assert set(train.labels.tolist()) <= {3, 4}
    x = train.get(0)
    assert x["eyes"].shape == (32, 96)
    with pytest.raises(shards.ShardError, match="allowed"):
        shards.ShardReader(tmp_path / "out", labels=["confused"])


@pytest.mark.skipif(not (DATA / "fer2013" / "train").is_dir(), reason="needs ../shared/data/fer2013")
def test_real_fer2013_sample(tmp_path):
    """A few hundred real FER2013 images through the default `auto` mode: every one kept."""
    src = tmp_path / "src"
    for cls in sorted(p.name for p in (DATA / "fer2013" / "train").iterdir()):
        (src / "train" / cls).mkdir(parents=True)
        for f in sorted((DATA / "fer2013" / "train" / cls).glob("*.jpg"))[:30]:
            (src / "train" / cls / f.name).write_bytes(f.read_bytes())
    s = run_preprocess(str(src), str(tmp_path / "out"), PreprocessConfig(dataset="fer2013"), jobs=2,
                       progress=False)
    summary = shards.summarize(tmp_path / "out")
    assert s.failed == 0 and s.samples == 210
    assert summary["splits"]["train"]["disgust"] == 30
    assert summary["box_methods"].get("detector", 0) > 100  # most small faces are found
    assert sum(summary["box_methods"].values()) == 210


def test_dask_cluster_gives_the_same_shards(tmp_path):
    """`--backend dask --scheduler ADDRESS`: the joblib work runs on a Dask cluster (here two local
    worker processes on the loopback address) and writes exactly what a local run writes."""
    distributed = pytest.importorskip("distributed")
    make_source(tmp_path / "src")
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "local"), CFG, jobs=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        r = subprocess.run([sys.executable, "-m", "cli", "preprocess", str(tmp_path / "src"), str(tmp_path / "dask"),
                            "--face", "aligned", "--shard-size", "5", "--chunk-size", "3", "--backend", "dask",
                            "--scheduler", cluster.scheduler_address, "-q"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = shards.Manifest.load(tmp_path / "local"), shards.Manifest.load(tmp_path / "dask")
    assert [s.to_dict() for s in a.segments] == [s.to_dict() for s in b.segments]  # incl. sha256
