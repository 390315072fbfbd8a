"""Property-based fuzz of the readers, the manifest and the shard format (hypothesis, fixed seed).

Whatever the bytes, the library either reads them or raises one of its own errors
(`FaceblocksError`): never another exception. ``derandomize`` makes every run try the same
examples, and ``max_examples`` bounds the time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prepro.errors import FaceblocksError  # noqa: E402

FUZZ = settings(derandomize=True, max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_CELL = st.one_of(st.text(max_size=12), st.sampled_from(["happy", "0", "3", "-1", "nan", "1e999", "", "a.jpg",
                                                          "../x.jpg", "/etc/passwd", "Training", "PublicTest"]))


def _csv(rows: list[list[str]]) -> str:
    return "\n".join(",".join(r) for r in rows)


@FUZZ
@given(rows=st.lists(st.lists(_CELL, min_size=0, max_size=6), max_size=8),
       header=st.sampled_from(["path,label", "emotion,pixels,Usage", "path,label,split,left,top,right,bottom", ""]))
def test_label_files_and_csvs_are_read_or_refused(tmp_path_factory, rows, header) -> None:
    from prepro.readers import list_source

    folder = tmp_path_factory.mktemp("csv")
    src = folder / "labels.csv"
    src.write_text((header + "\n" if header else "") + _csv(rows), encoding="utf-8", errors="surrogateescape")
    try:
        listing = list_source(str(src))
    except FaceblocksError:
        return
    for item in listing.items:  # a listed image never lies outside the label file's folder
        assert Path(item.path).resolve().is_relative_to(folder.resolve())


@FUZZ
@given(data=st.binary(max_size=400))
def test_binary_csv_is_read_or_refused(tmp_path_factory, data: bytes) -> None:
    from prepro.readers import list_source

    src = tmp_path_factory.mktemp("bin") / "fer2013.csv"
    src.write_bytes(b"emotion,pixels,Usage\n" + data)
    try:
        list_source(str(src))
    except FaceblocksError:
        pass


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                               st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory) -> Path:
    from tests.shardfakes import make_fake_shards

    return make_fake_shards(tmp_path_factory.mktemp("fuzz") / "shards")


@FUZZ
@given(key=st.sampled_from(["format_version", "params", "label_names", "split_names", "box_methods", "block_sizes",
                            "shards", "failures", "complete", "writer_id", "source"]), value=_JSON)
def test_manifest_values_are_read_or_refused(tmp_path_factory, shard_folder: Path, key: str, value) -> None:
    from prepro.shards import ShardReader, verify

    out = tmp_path_factory.mktemp("m") / "shards"
    shutil.copytree(shard_folder, out)
    m = json.loads((out / "manifest.json").read_text())
    m[key] = value
    (out / "manifest.json").write_text(json.dumps(m))
    try:
        verify(out)
        ShardReader(out).close()
    except FaceblocksError:
        pass


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1,
                      max_size=6))
def test_damaged_shards_with_a_matching_checksum_are_caught(tmp_path_factory, shard_folder: Path, flips) -> None:
    """Bytes of a shard changed and the manifest's checksum forged to match: reading either works
    or says the shard is damaged; never another exception."""
    from prepro.outputs import sha256_file
    from prepro.shards import ShardReader, verify

    out = tmp_path_factory.mktemp("s") / "shards"
    shutil.copytree(shard_folder, out)
    m = json.loads((out / "manifest.json").read_text())
    path = out / m["shards"][0]["file"]
    data = bytearray(path.read_bytes())
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    path.write_bytes(bytes(data))
    m["shards"][0]["sha256"] = sha256_file(path)
    (out / "manifest.json").write_text(json.dumps(m))
    try:
        verify(out)
        reader = ShardReader(out)
        for i in range(len(reader)):
            reader.get(i)
        reader.close()
    except FaceblocksError:
        pass
