"""Shard tasks: planned names, worker-written shards, reserved indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prepro import shards
from prepro.faces import CutSettings
from prepro.landmarks import LandmarkModelFile
from prepro.outputs import new_writer_id, sha256_file
from prepro.readers import Failure, RawItem
from prepro.worker import process_shard_task
from prepro.writer import next_shard_index, plan_shards, task_attrs, write_task_shard


def _items(n: int, split: str, root: Path) -> list[RawItem]:
    return [RawItem(source_id=f"{split}/{i}.png", path=str(root / f"{split}-{i}.png"), label="happy", split=split,
                    subject=None)
            for i in range(n)]


def _manifest() -> shards.Manifest:
    return shards.Manifest(params={}, source={}, label_names=["happy"], split_names=["train", "val", "test"],
                           box_methods=["estimated"], block_sizes={"eyes": [16, 48], "mouth": [16, 32], "face": [48, 48]},
                           landmark_model={}, writer_id=new_writer_id())


def test_tasks_hold_at_most_shard_size_items_of_one_split(tmp_path: Path) -> None:
    pending = _items(5, "train", tmp_path) + _items(2, "val", tmp_path)
    tasks = plan_shards(tmp_path, _manifest(), pending, shard_size=2)
    assert [(t.split, len(t.items), t.file) for t in tasks] == [
        ("train", 2, "shards/train-00000.h5"), ("train", 2, "shards/train-00001.h5"),
        ("train", 1, "shards/train-00002.h5"), ("val", 2, "shards/val-00000.h5")]
    assert [t.start for t in tasks] == [0, 2, 4, 5]


def test_a_task_whose_items_all_failed_keeps_its_index_reserved(tmp_path: Path) -> None:
    m = _manifest()
    pending = _items(4, "train", tmp_path)
    first = plan_shards(tmp_path, m, pending, shard_size=2)[0]
    outcome = write_task_shard(tmp_path, first, [Failure(it.source_id, "no face") for it in first.items],
                               task_attrs(m, first), m.writer_id)
    assert outcome.record is None and [f["shard"] for f in outcome.failures] == [0, 0]
    m.failures.extend(outcome.failures)
    # A resumed run names the next shard as the uninterrupted run did: train-00001.
    assert next_shard_index(m, "train") == 1
    assert plan_shards(tmp_path, m, pending[2:], shard_size=2)[0].file == "shards/train-00001.h5"


def test_a_worker_writes_its_own_shard(tmp_path: Path) -> None:
    """The Dask path's task: the worker cuts the images and writes the shard; the record it
    returns names the file with its checksum."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[20:220, 150:330, 1], (48, 48), interpolation=cv2.INTER_AREA)
    src = tmp_path / "src"
    src.mkdir()
    items = _items(3, "train", src)
    for it in items[:2]:
        cv2.imwrite(it.path, face)
    Path(items[2].path).write_bytes(b"not an image")
    m = _manifest()
    out = tmp_path / "out"
    (out / shards.SHARD_DIR).mkdir(parents=True)
    task = plan_shards(out, m, items, shard_size=8)[0]
    outcome = process_shard_task(str(out), task, [(it, None) for it in items], task_attrs(m, task), m.writer_id,
                                 CutSettings(face_mode="aligned"), str(LandmarkModelFile.default().path), 2)
    assert outcome.record.n_samples == 2 and outcome.record.sha256 == sha256_file(out / task.file)
    assert [f["source"] for f in outcome.failures] == [items[2].source_id]
    import h5py

    with h5py.File(out / task.file, "r") as f:
        assert f["eyes"].shape == (2, 16, 48) and list(f["source"].asstr()[()]) == [it.source_id for it in items[:2]]


def test_a_chunk_gives_what_its_images_give_one_at_a_time(tmp_path: Path) -> None:
    """The chunked worker: a chunk holding a broken file, a decompression bomb, a 1x1 image, a
    missing file, a CSV row of bad pixels and good faces gives the same samples and failures, in
    the same order, as cutting each image alone."""
    import struct
    import zlib

    import cv2
    from skimage import data

    from prepro.worker import process_chunk

    face = cv2.resize(data.astronaut()[20:220, 150:330, 1], (48, 48), interpolation=cv2.INTER_AREA)
    src = tmp_path / "src"
    src.mkdir()
    files = {"good-0.png": face, "good-1.jpg": np.ascontiguousarray(face[:, ::-1]), "tiny.png": face[:1, :1]}
    for name, img in files.items():
        cv2.imwrite(str(src / name), img)
    (src / "broken.jpg").write_bytes((src / "good-1.jpg").read_bytes()[:300])
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    (src / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    names = ["good-0.png", "broken.jpg", "bomb.png", "tiny.png", "missing.png", "good-1.jpg"]
    items = [RawItem(source_id=n, path=str(src / n), label="happy", split="train", subject=None) for n in names]
    payload = [(it, None) for it in items]
    csv_item = RawItem(source_id="rows.csv:row=1", path=str(src / "rows.csv"), label="happy", split="train",
                       subject=None)
    payload.append((csv_item, "1 2 3"))  # not 48x48 pixels
    settings, model = CutSettings(face_mode="aligned"), str(LandmarkModelFile.default().path)
    together = process_chunk(0, payload, settings, model)[1]
    alone = [process_chunk(0, [p], settings, model)[1][0] for p in payload]
    assert [type(r).__name__ for r in together] == ["Sample", "Failure", "Failure", "Failure", "Failure", "Sample",
                                                    "Failure"]
    for a, b in zip(together, alone):
        assert type(a) is type(b)
        if isinstance(a, Failure):
            assert (a.source, a.reason) == (b.source, b.reason)
        else:
            assert a.source == b.source and a.eyes == b.eyes and a.mouth == b.mouth and a.face == b.face
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert abs(a.quality - b.quality) < 1e-9
    reasons = {a.source: a.reason for a in together if isinstance(a, Failure)}
    assert "too large" in reasons["bomb.png"] and "too small" in reasons["tiny.png"]
    assert "truncated" in reasons["broken.jpg"] and "unreadable" in reasons["missing.png"]
