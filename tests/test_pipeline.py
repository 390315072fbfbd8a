"""End-to-end preprocessing: every input accounted for, jobs-invariant output, resume, growth,
retries, damaged shards, refusal, ownership of files."""

from __future__ import annotations

import json
import os
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

from prepro import manifest, shards
from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import DataError, InputError, OutputError
from prepro.outputs import LOCK_NAME, output_lock, sha256_file
from prepro.pipeline import RunSummary, run_preprocess

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


def run(src: Path, out: Path, cfg: PreprocessConfig | None = None, jobs: int = 1, chunk_size: int = 64,
        **kw) -> RunSummary:
    return run_preprocess(str(src), str(out), cfg or CFG, PreprocessRun(jobs=jobs, chunk_size=chunk_size),
                          progress=False, **kw)


def _read_all(out: Path, by_source: bool = False) -> dict[str, np.ndarray]:
    """Every dataset of every shard of ``out``, in folder order (or sorted by source)."""
    m = shards.Manifest.load(out)
    parts: dict[str, list] = {}
    for rec in m.shards:
        with h5py.File(out / rec.file, "r") as f:
            for k in f.keys():
                parts.setdefault(k, []).append(f[k][()])
    data = {k: np.concatenate(v) for k, v in parts.items()}
    if by_source:
        order = np.argsort(data["source"], kind="stable")
        data = {k: v[order] for k, v in data.items()}
    return data


def _same_samples(a: Path, b: Path, by_source: bool = False) -> None:
    x, y = _read_all(a, by_source), _read_all(b, by_source)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _same_attrs(a: Path, b: Path) -> None:
    """The shards' root attributes agree but for the folder's own writer id."""
    for ra, rb in zip(shards.Manifest.load(a).shards, shards.Manifest.load(b).shards):
        with h5py.File(a / ra.file, "r") as fa, h5py.File(b / rb.file, "r") as fb:
            x, y = dict(fa.attrs), dict(fb.attrs)
            assert x.pop("writer_id") != y.pop("writer_id")
            assert x.keys() == y.keys(), (x.keys(), y.keys())
            assert all(np.array_equal(x[k], y[k]) for k in x), [(k, x[k], y[k]) for k in x
                                                                  if not np.array_equal(x[k], y[k])]


def _records(out: Path) -> list[tuple[str, str, int]]:
    """The shard list without checksums: every folder's shards carry its own writer id."""
    return [(r.file, r.split, r.n_samples) for r in shards.Manifest.load(out).shards]


CFG = PreprocessConfig(face="aligned", shard_size=5)


def test_every_input_accounted_for(tmp_path):
    expect = make_source(tmp_path / "src")
    s = run(tmp_path / "src", tmp_path / "out")
    listed_unusable = shards.Manifest.load(tmp_path / "out").listing_failures  # the unknown label
    assert s.complete and s.new_items == 12 + len(expect) - len(listed_unusable) and len(listed_unusable) == 1
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
    assert s.failed == summary["failed"] and sum(s.failure_reasons.values()) == s.failed


def test_shard_contents_and_attributes(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run(tmp_path / "src", tmp_path / "out")
    m = shards.Manifest.load(tmp_path / "out")
    rec = m.shards[0]
    with h5py.File(tmp_path / "out" / rec.file, "r") as f:
        assert f["eyes"].shape[1:] == (16, 48) and f["eyes"].dtype == np.uint8
        assert f["mouth"].shape[1:] == (16, 32) and f["face"].shape[1:] == (48, 48)
        assert f["landmarks"].shape[1:] == (68, 2)
        assert f.attrs["format_version"] == manifest.FORMAT_VERSION == 2
        assert json.loads(f.attrs["label_names"])[3] == "happy"
        assert json.loads(f.attrs["params"]) == m.params == CFG.to_dict()
        assert json.loads(f.attrs["params"])["face"] == "aligned"
        assert len(json.loads(f.attrs["landmark_model"])["sha256"]) == 64
        assert f.attrs["writer_id"] == m.writer_id
        assert f.attrs["faceblocks_version"]
        names = json.loads(f.attrs["box_methods"])
        assert all(names[i] == "estimated" for i in f["box_method"][()])
        assert np.isnan(f["det_score"][()]).all()
        assert np.all((f["quality"][()] >= 0) & (f["quality"][()] <= 1))
        assert f["eyes"][()].std() > 0  # not empty blocks
    # 12 items (too few per class for val and test), shard_size 5 -> shards of at most 5
    assert all(r.n_samples <= 5 for r in m.shards)
    assert m.complete and m.n_samples == 12 and not m.failures and not m.missing
    assert m.source["n_items"] == 12 and len(m.source["fingerprint"]) == 64


@pytest.mark.parametrize("backend", [None, "multiprocessing"])
def test_same_output_for_one_and_two_jobs(tmp_path, backend):
    make_source(tmp_path / "src")
    run(tmp_path / "src", tmp_path / "a")
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "b"), CFG,
                   PreprocessRun(jobs=2, chunk_size=3, backend=backend), progress=False)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    _same_samples(tmp_path / "a", tmp_path / "b")
    _same_attrs(tmp_path / "a", tmp_path / "b")
    ma, mb = shards.Manifest.load(tmp_path / "a"), shards.Manifest.load(tmp_path / "b")
    assert ma.failures == mb.failures and ma.listing_failures == mb.listing_failures


def test_resume_after_crash_mid_run(tmp_path, monkeypatch):
    make_source(tmp_path / "src", per_class=6)
    cfg = PreprocessConfig(face="aligned", shard_size=2)
    run(tmp_path / "src", tmp_path / "ref", cfg)

    import prepro.writer as writer
    from prepro.outputs import temp_name

    real = writer.write_shard
    calls = {"n": 0}

    def crashing(path, samples, attrs, writer_id):
        calls["n"] += 1
        if calls["n"] == 4:
            # die after the shard's temporary file exists but before it is renamed
            temp_name(path, writer_id).write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(path, samples, attrs, writer_id)

    monkeypatch.setattr(writer, "write_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "src", tmp_path / "out", cfg)
    m = shards.Manifest.load(tmp_path / "out")
    assert len(m.shards) == 3 and not m.complete
    assert list((tmp_path / "out" / "shards").glob(".*.tmp"))
    monkeypatch.setattr(writer, "write_shard", real)
    s = run(tmp_path / "src", tmp_path / "out", cfg, jobs=2)
    assert s.complete and s.written_now == s.samples - sum(r.n_samples for r in m.shards)
    assert not list((tmp_path / "out" / "shards").glob(".*.tmp"))  # the killed run's temporary file is gone
    assert _records(tmp_path / "ref") == _records(tmp_path / "out")
    _same_samples(tmp_path / "ref", tmp_path / "out")
    assert shards.verify(tmp_path / "out").whole
    # nothing doubled: a third run does nothing and leaves the manifest as it is
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    again = run(tmp_path / "src", tmp_path / "out", cfg)
    assert again.written_now == 0 and again.new_items == 0 and again.samples == s.samples
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before


def test_resume_after_kill_9(tmp_path):
    # 100 shards of 3: the kill must land mid-run however fast this machine cuts them
    make_source(tmp_path / "src", per_class=100, bad=False)
    cmd = [sys.executable, str(ROOT / "cli.py"), "preprocess", str(tmp_path / "src"), str(tmp_path / "out"),
           "--face", "aligned", "--shard-size", "3", "--chunk-size", "2", "-j", "1", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(shards.Manifest.load(tmp_path / "out").shards) >= 2:
                break
        except DataError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = shards.Manifest.load(tmp_path / "out")
    assert not m.complete, "the run finished before it could be killed; make the fixture larger"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)  # the dead run's lock is no obstacle
    assert done.returncode == 0, done.stderr
    ref = tmp_path / "ref"
    run(tmp_path / "src", ref, PreprocessConfig(face="aligned", shard_size=3))
    b = _read_all(tmp_path / "out")
    assert len(b["source"]) == 300
    assert _records(ref) == _records(tmp_path / "out")
    _same_samples(ref, tmp_path / "out")
    assert shards.verify(tmp_path / "out").whole


# ------------------------------------------------------------------------------------------------
# a source that changes: growth, files that disappear, retried failures


def _add_images(folder: Path, names: list[str], seed: int) -> None:
    for k, name in enumerate(names):
        Image.fromarray(_face_like(seed + k)).save(folder / name)


def test_a_grown_source_gets_its_new_files_appended(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, bad=False)
    run(src, out)
    first = shards.Manifest.load(out)
    digests = {r.file: r.sha256 for r in first.shards}
    split_of = dict(zip(_read_all(out)["source"].astype(str), _read_all(out)["split"]))
    _add_images(src / "happy", ["new_0.png", "new_1.png", "new_2.png"], 200)
    _add_images(src / "sad", ["new_0.png", "new_1.png"], 300)
    log: list[str] = []
    s = run(src, out, log=log.append)
    assert s.new_items == 5 and s.written_now == 5 and s.samples == 17 and s.complete
    m = shards.Manifest.load(out)
    assert m.shards[:len(first.shards)] == first.shards  # finished shards are never rewritten
    for f, digest in digests.items():
        assert sha256_file(out / f) == digest
    assert {r.file for r in m.shards[len(first.shards):]}.isdisjoint(digests)  # new files only
    sources = set(_read_all(out)["source"].astype(str))
    assert {"happy/new_0.png", "happy/new_2.png", "sad/new_1.png"} <= sources and len(sources) == 17
    assert any("continuing" in line for line in log)
    assert shards.verify(out).whole and m.source["n_items"] == 17
    now = dict(zip(_read_all(out)["source"].astype(str), _read_all(out)["split"]))
    assert all(now[source] == split for source, split in split_of.items())  # earlier inputs keep their splits


def test_files_that_disappear_are_reported_and_keep_their_samples(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, bad=False)
    run(src, out)
    before = shards.Manifest.load(out)
    (src / "happy" / "happy_00.png").unlink()
    (src / "sad" / "sad_03.png").unlink()
    log: list[str] = []
    s = run(src, out, log=log.append)
    assert s.missing == 2 and s.new_items == 0 and s.written_now == 0 and s.samples == 12 and s.complete
    m = shards.Manifest.load(out)
    assert m.missing == ["happy/happy_00.png", "sad/sad_03.png"] and m.shards == before.shards
    assert shards.summarize(out)["missing"] == m.missing
    assert any("no longer in the source" in line and "happy/happy_00.png" in line for line in log)
    (src / "happy" / "happy_00.png").write_bytes(b"")  # back, but now unusable: it stays a sample
    assert run(src, out).missing == 1


def test_retry_failed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, bad=False)
    (src / "happy" / "late.png").write_bytes(b"")  # not yet there when the first run read it
    s = run(src, out)
    assert s.samples == 12 and s.failed == 1
    _add_images(src / "happy", ["late.png"], 400)
    again = run(src, out)
    assert again.new_items == 0 and again.failed == 1  # a failure stays one: the input is accounted for
    retried = run(src, out, retry_failed=True)
    assert retried.new_items == 1 and retried.written_now == 1 and retried.failed == 0 and retried.samples == 13
    assert "happy/late.png" in set(_read_all(out)["source"].astype(str))
    assert shards.Manifest.load(out).failures == [] and shards.verify(out).whole


# ------------------------------------------------------------------------------------------------
# damaged shards, other settings, files that are not faceblocks'


def test_a_damaged_or_missing_shard_is_rebuilt_on_rerun(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, per_class=6, bad=False)
    run(src, out)
    recs = shards.Manifest.load(out).shards
    with open(out / recs[0].file, "ab") as f:
        f.write(b"garbage after the end")  # still readable HDF5, but not the file that was written
    (out / recs[1].file).unlink()
    assert not shards.verify(out).whole
    log: list[str] = []
    s = run(src, out, log=log.append)
    assert s.written_now == recs[0].n_samples + recs[1].n_samples and s.samples == 18
    assert any(recs[0].file in line and "checksum" in line for line in log)
    assert any(recs[1].file in line and "missing" in line for line in log)
    assert shards.verify(out).whole and not (out / recs[0].file).exists()
    ref = tmp_path / "ref"
    run(src, ref)
    _same_samples(ref, out, by_source=True)  # the same samples, the rebuilt ones in new shards


def test_a_damaged_shard_faceblocks_cannot_prove_its_own_is_left_alone(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, bad=False)
    run(src, out)
    rec = shards.Manifest.load(out).shards[0]
    (out / rec.file).write_text("someone's notes, saved over the shard")
    s = run(src, out)
    assert (out / rec.file).read_text() == "someone's notes, saved over the shard"  # left alone
    m = shards.Manifest.load(out)
    assert rec.file not in {r.file for r in m.shards} and m.n_samples == s.samples == 12  # rebuilt elsewhere
    report = shards.verify(out)
    assert report.whole and rec.file in report.foreign


def test_other_parameters_refused_unless_overwrite(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run(tmp_path / "src", tmp_path / "out")
    other = PreprocessConfig(face="aligned", shard_size=5, blocks=CFG.blocks.__class__(eyes_size=(24, 72)))
    with pytest.raises(OutputError, match="eyes_size.*--overwrite"):
        run(tmp_path / "src", tmp_path / "out", other)
    s = run(tmp_path / "src", tmp_path / "out", other, overwrite=True)
    assert s.samples == 12
    assert shards.Manifest.load(tmp_path / "out").block_sizes["eyes"] == [24, 72]
    assert shards.verify(tmp_path / "out").whole


def test_overwrite_keeps_files_faceblocks_did_not_write(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_source(src, bad=False)
    run(src, out)
    old = shards.Manifest.load(out)
    (out / "notes.txt").write_text("mine")
    (out / "shards" / "README").write_text("also mine")
    changed = out / old.shards[-1].file  # a listed shard changed since it was written
    with open(changed, "ab") as f:
        f.write(b"edited")
    log: list[str] = []
    other = PreprocessConfig(face="aligned", shard_size=5, blocks=CFG.blocks.__class__(mouth_size=(24, 48)))
    run(src, out, other, overwrite=True, log=log.append)
    assert (out / "notes.txt").read_text() == "mine" and (out / "shards" / "README").read_text() == "also mine"
    assert changed.read_bytes().endswith(b"edited")  # not provably the old run's: left alone
    assert any("left alone" in line and old.shards[-1].file in line for line in log)
    m = shards.Manifest.load(out)
    assert m.writer_id != old.writer_id and m.block_sizes["mouth"] == [24, 48]
    report = shards.verify(out)
    assert not report.problems and "shards/README" in report.foreign


def test_foreign_non_empty_folder_refused(tmp_path):
    make_source(tmp_path / "src", bad=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not empty"):
        run(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != LOCK_NAME) == ["thesis.tex"]
    run(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"  # never deletes what is not ours


def test_a_shard_name_taken_by_a_foreign_file_is_never_replaced(tmp_path):
    make_source(tmp_path / "src", bad=False)  # 12 inputs, all in train (too few per class for val and test)
    shard_dir = tmp_path / "out" / "shards"
    shard_dir.mkdir(parents=True)
    (shard_dir / "train-00000.h5").write_text("not ours")
    (shard_dir / "train-00001.h5").symlink_to(tmp_path / "src")
    s = run(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert (shard_dir / "train-00000.h5").read_text() == "not ours" and (shard_dir / "train-00001.h5").is_symlink()
    assert [f for f, _split, _n in _records(tmp_path / "out")] == [f"shards/train-0000{i}.h5" for i in (2, 3, 4)]
    report = shards.verify(tmp_path / "out")
    assert report.whole and s.samples == 12 and report.foreign == ["shards/train-00000.h5", "shards/train-00001.h5"]


def test_a_second_writer_is_refused(tmp_path):
    make_source(tmp_path / "src", bad=False)
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputError, match="being written by another faceblocks process"):
            run(tmp_path / "src", out)
        code = ("import sys; from pathlib import Path; from prepro.outputs import output_lock\n"
                "from prepro.errors import OutputError\n"
                "try:\n    output_lock(Path(sys.argv[1])).__enter__()\nexcept OutputError as e:\n"
                "    print(e); sys.exit(3)\n")
        other = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True)
        assert other.returncode == 3 and "pid" in other.stdout
    s = run(tmp_path / "src", out)  # released: the next run takes it
    assert s.samples == 12


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
    s = run(tmp_path / "fer.csv", tmp_path / "out", jobs=2)
    summary = shards.summarize(tmp_path / "out")
    assert s.samples == 7 and summary["failed"] == 3
    reasons = " | ".join(f["reason"] for f in summary["failures"])
    assert "2304" in reasons and "9" in reasons
    assert set(summary["splits"]) == {"train", "val", "test"}


def test_verify_detects_damage(tmp_path):
    make_source(tmp_path / "src", bad=False)
    run(tmp_path / "src", tmp_path / "out")
    assert shards.verify(tmp_path / "out").whole
    segs = shards.Manifest.load(tmp_path / "out").shards
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
    (tmp_path / "out" / "shards" / "stray.h5").write_bytes(b"x")
    assert shards.verify(tmp_path / "out").foreign == ["shards/stray.h5"]  # named, left alone
    with pytest.raises(DataError, match=f"{segs[0].file} .* checksum mismatch"):
        shards.ShardReader(tmp_path / "out")


def test_shard_reader_views(tmp_path):
    make_source(tmp_path / "src", per_class=6, bad=False)
    run(tmp_path / "src", tmp_path / "out")
    everything = shards.ShardReader(tmp_path / "out")
    assert len(everything) == 18
    train = shards.ShardReader(tmp_path / "out", split="train", labels=["happy", "sad"])
    assert 0 < len(train) < 18
    assert set(train.labels.tolist()) <= {3, 4}
    x = train.get(0)
    assert x["eyes"].shape == (16, 48)
    with pytest.raises(InputError, match="allowed"):
        shards.ShardReader(tmp_path / "out", labels=["confused"])
    with pytest.raises(InputError, match="unknown split"):
        shards.ShardReader(tmp_path / "out", split="dev")
    everything.close()
    train.close()


@pytest.mark.skipif(not (DATA / "fer2013" / "train").is_dir(), reason="needs ../shared/data/fer2013")
def test_real_fer2013_sample(tmp_path):
    """A few hundred real FER2013 images through the default `auto` mode: every one kept."""
    src = tmp_path / "src"
    for cls in sorted(p.name for p in (DATA / "fer2013" / "train").iterdir()):
        (src / "train" / cls).mkdir(parents=True)
        for f in sorted((DATA / "fer2013" / "train" / cls).glob("*.jpg"))[:30]:
            (src / "train" / cls / f.name).write_bytes(f.read_bytes())
    s = run(src, tmp_path / "out", PreprocessConfig(dataset="fer2013"), jobs=2)
    summary = shards.summarize(tmp_path / "out")
    assert s.failed == 0 and s.samples == 210
    assert summary["splits"]["train"]["disgust"] == 30
    assert summary["box_methods"].get("hog", 0) > 100  # most small faces are found
    assert set(summary["box_methods"]) <= {"hog", "estimated_fallback"}  # pre-cropped: the crop where HOG fails
    assert sum(summary["box_methods"].values()) == 210


def test_dask_cluster_gives_the_same_shards(tmp_path):
    """`--backend dask --scheduler ADDRESS`: the joblib work runs on a Dask cluster (here two local
    worker processes on the loopback address) and writes exactly what a local run writes."""
    distributed = pytest.importorskip("distributed")
    make_source(tmp_path / "src")
    run(tmp_path / "src", tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        r = subprocess.run([sys.executable, "-m", "cli", "preprocess", str(tmp_path / "src"), str(tmp_path / "dask"),
                            "--face", "aligned", "--shard-size", "5", "--chunk-size", "3", "--backend", "dask",
                            "--scheduler", cluster.scheduler_address, "-q"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _records(tmp_path / "local") == _records(tmp_path / "dask")
    _same_samples(tmp_path / "local", tmp_path / "dask")
    _same_attrs(tmp_path / "local", tmp_path / "dask")


def test_more_jobs_than_cores_or_chunks_are_lowered_and_said(tmp_path, monkeypatch):
    """`-j 16` on a machine with 2 cores starts 2 workers (each would load the 100 MB landmark
    model to share the same cores), and says so; fewer chunks than workers start fewer."""
    from prepro import distributor

    monkeypatch.setattr(distributor, "usable_cores", lambda: 2)
    assert distributor.worker_count(16) == 2 and distributor.worker_count(-1) == 2
    assert distributor.worker_count(16, tasks=1) == 1 and distributor.worker_count(1, tasks=50) == 1
    make_source(tmp_path / "src", bad=False)
    said: list[str] = []
    started: list[int] = []
    real = distributor.worker_count
    monkeypatch.setattr(distributor, "worker_count", lambda jobs, tasks=None: started.append(real(jobs, tasks))
                        or started[-1])
    one_shard = PreprocessConfig(face="aligned", shard_size=64)
    s = run_preprocess(str(tmp_path / "src"), str(tmp_path / "out"), one_shard, PreprocessRun(jobs=16, chunk_size=64),
                       progress=False, log=said.append)
    assert s.complete and started and max(started) == 1  # one chunk of work: one worker
    assert any("-j 16 lowered to 1 worker" in m and "1 chunks" in m for m in said), said
    said.clear()
    run_preprocess(str(tmp_path / "src"), str(tmp_path / "out2"), CFG, PreprocessRun(jobs=16, chunk_size=2),
                   progress=False, log=said.append)
    assert any("-j 16 lowered to 2 workers: this machine lets it use 2 cores" in m for m in said), said


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_sigterm_ends_the_run_and_its_workers(tmp_path, backend):
    """SIGTERM (what `timeout` and `docker stop` send) to `preprocess -j 2`: the run stops with a
    message, its worker processes end with it, and the same command resumes."""
    make_source(tmp_path / "src", per_class=200, bad=False)
    cmd = [sys.executable, "-m", "cli", "preprocess", str(tmp_path / "src"), str(tmp_path / "out"), "--face",
           "aligned", "-j", "2", "--chunk-size", "2", "--shard-size", "4", "-q", "--backend", backend]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: set[int] = set()
    deadline = time.time() + 120
    while time.time() < deadline and len(children) < 2 and proc.poll() is None:
        children |= _descendants(proc.pid)
        time.sleep(0.2)
    assert len(children) >= 2, "the run should have started its workers"
    # Signal once the workers have written something (they are mid-run), never after a fixed sleep:
    # on a fast machine the whole run can end within a second.
    while time.time() < deadline and not list((tmp_path / "out").rglob("*.h5")) and proc.poll() is None:
        time.sleep(0.05)
    children |= _descendants(proc.pid)
    assert proc.poll() is None, "the run ended before it could be stopped: give it more images"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "stopped by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in children):
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "worker processes outlived the run"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert shards.verify(tmp_path / "out").whole


def test_a_dead_forked_worker_is_a_clean_error_and_the_run_resumes(tmp_path):
    """A worker killed mid-run (a crash in dlib, the kernel's out-of-memory killer): the run ends
    with a message, not a traceback or a hang, keeps what it wrote, and the same command resumes."""
    make_source(tmp_path / "src", per_class=200, bad=False)
    cmd = [sys.executable, "-m", "cli", "preprocess", str(tmp_path / "src"), str(tmp_path / "out"), "--face",
           "aligned", "-j", "2", "--chunk-size", "2", "--shard-size", "4", "-q", "--backend", "multiprocessing"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out").rglob("*.h5")) and proc.poll() is None:
        time.sleep(0.05)
    # the forked workers, not multiprocessing's resource tracker (a child too, started with the pool)
    workers = sorted(p for p in _descendants(proc.pid) if b"resource_tracker" not in _cmdline(p))
    assert workers and proc.poll() is None, "the run ended before a worker could be killed: give it more images"
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "a worker process died" in err and "Traceback" not in err, err[-2000:]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert shards.verify(tmp_path / "out").whole


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                out |= set(kids)
                todo += kids
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
