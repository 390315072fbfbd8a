"""prepro.outputs and the manifest: one writer per folder, atomic files, what faceblocks may remove,
and manifests that are checked key by key before anything uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shardfakes import make_fake_shards

from prepro.errors import DataError, OutputError
from prepro.outputs import (LOCK_NAME, atomic_write, atomic_write_text, is_empty_but_for_us, new_writer_id,
                            output_lock, remove_own_temp_files, temp_name)
from prepro.manifest import FORMAT_VERSION, MANIFEST, Manifest

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# the lock


def test_output_lock_refuses_a_second_writer(tmp_path):
    out = tmp_path / "new" / "folder"
    with output_lock(out):
        assert out.is_dir() and (out / LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(OutputError, match=rf"being written by another faceblocks process \(pid {os.getpid()}\)"):
            with output_lock(out):
                pass
    with output_lock(out):  # released when the first writer left
        pass


def test_output_lock_across_processes_and_after_a_kill(tmp_path):
    code = ("import sys, time; from pathlib import Path; from prepro.outputs import output_lock\n"
            "with output_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            with output_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    with output_lock(tmp_path):  # no stale lock is left behind
        pass


def test_output_lock_on_a_path_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        with output_lock(tmp_path / "file" / "out"):
            pass


def test_is_empty_but_for_us(tmp_path):
    assert is_empty_but_for_us(tmp_path / "missing") and is_empty_but_for_us(tmp_path)
    (tmp_path / LOCK_NAME).write_text("1")
    assert is_empty_but_for_us(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert not is_empty_but_for_us(tmp_path)


# ------------------------------------------------------------------------------------------------
# writing and removing files


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "x.txt"
    atomic_write_text(p, "first")

    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(p, half_then_fail)
    assert p.read_text() == "first" and sorted(q.name for q in tmp_path.iterdir()) == ["x.txt"]
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_text(tmp_path / "no-such-folder" / "y.txt", "z")


def test_only_this_writers_temporary_files_are_removed(tmp_path):
    mine, other = new_writer_id(), new_writer_id()
    assert mine != other and len(mine) == 16
    a = temp_name(tmp_path / "train-00000.h5", mine)
    b = temp_name(tmp_path / "train-00001.h5", other)
    for p in (a, b, tmp_path / "notes.tmp", tmp_path / f".user.{mine}.tmp.bak"):
        p.write_text("x")
    assert a.name.startswith(".train-00000.h5.") and a.name.endswith(".tmp")
    assert remove_own_temp_files(tmp_path, mine) == [a.name]
    assert not a.exists() and b.exists() and (tmp_path / "notes.tmp").exists()


# ------------------------------------------------------------------------------------------------
# the manifest


@pytest.fixture()
def shards(tmp_path) -> Path:
    return make_fake_shards(tmp_path / "shards", labels=("happy", "sad"), per_class={"train": 3, "val": 1, "test": 1})


def _edit(root: Path, change) -> None:
    d = json.loads((root / MANIFEST).read_text())
    change(d)
    (root / MANIFEST).write_text(json.dumps(d))


def test_manifest_round_trip(shards):
    m = Manifest.load(shards)
    assert m.format_version == FORMAT_VERSION == 2 and m.n_samples == 10 and m.complete
    m.save(shards)
    assert Manifest.load(shards) == m
    assert json.loads((shards / MANIFEST).read_text())["n_samples"] == 10


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), "unexpected extra"),
    (lambda d: d.pop("writer_id"), "missing writer_id"),
    (lambda d: (d.pop("failures"), d.update(segments=[])), "missing failures; unexpected segments"),
    (lambda d: d.update(complete="yes"), "complete is a str"),
    (lambda d: d.update(shards={}), "shards is a dict"),
    (lambda d: d["shards"][0].update(file="../../etc/passwd"), "a bad shard entry"),
    (lambda d: d["shards"][0].update(file="shards/../x.h5"), "a bad shard entry"),
    (lambda d: d["shards"][0].update(n_samples=True), "a bad shard entry"),
    (lambda d: d["shards"][0].update(split="dev"), "a bad shard entry"),
    (lambda d: d["shards"][0].update(extra=1), "a bad shard entry"),
    (lambda d: d.update(failures=[{"source": "a.jpg"}]), "a bad failure entry"),
    (lambda d: d.update(label_names=["happy", 3]), "other than strings"),
    (lambda d: d.update(block_sizes={"eyes": [16, 48], "mouth": [16, 32]}), "bad block sizes"),
    (lambda d: d.update(block_sizes={"eyes": [16, -48], "mouth": [16, 32], "face": [32, 32]}), "bad block sizes"),
    (lambda d: d.update(block_sizes={"eyes": [16, True], "mouth": [16, 32], "face": [32, 32]}), "bad block sizes"),
])
def test_manifest_with_wrong_keys_or_types_is_refused(shards, change, message):
    _edit(shards, change)
    with pytest.raises(DataError, match=f"not written by faceblocks .*{message}"):
        Manifest.load(shards)


def test_old_or_foreign_manifests_are_refused_with_a_clear_message(shards, tmp_path):
    _edit(shards, lambda d: d.update(format_version=1))  # the first format (segments) is not read any more
    with pytest.raises(DataError, match="format version 1; .* reads version 2: preprocess again"):
        Manifest.load(shards)
    (shards / MANIFEST).write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="format version None"):
        Manifest.load(shards)
    (shards / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="is damaged"):
        Manifest.load(shards)
    with pytest.raises(DataError, match="holds no manifest.json"):
        Manifest.load(tmp_path / "nowhere")
