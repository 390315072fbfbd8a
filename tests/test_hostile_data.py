"""Hostile inputs, the data side: label codes, forged manifests and shards, links and special files
in shard folders, full disks, regexes from dataset descriptions.

Every case either reads the data as faceblocks wrote it or ends in one of its own errors (a
message naming the file), never a wrong label, a traceback, a hang or a file written outside.
Family-wide cases are property-based (hypothesis, derandomized and bounded).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from prepro.errors import DataError, FaceblocksError, InputError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FER_CODES = {"0": "angry", "1": "disgust", "2": "fear", "3": "happy", "4": "sad", "5": "surprise", "6": "neutral"}


def _fer_csv(path: Path, emotions: list[str]) -> Path:
    pixels = " ".join(["128"] * 48 * 48)
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{pixels},Training\n" for e in emotions))
    return path


# ---------------------------------------------------------------------------------------------
# Label codes (issue 30 item 4)

_CODE_LIKE = st.one_of(
    st.builds(lambda pre, n, post: f"{pre}{n}{post}", st.sampled_from(["", "-", "+", "0", " - ", "--", "−", "0x"]),
              st.integers(min_value=0, max_value=12), st.sampled_from(["", "-", ".0", "e0", " 0", "_", "+", "0"])),
    st.text(alphabet="0123456789-+ ._e١", min_size=1, max_size=5))


@FUZZ
@given(text=_CODE_LIKE)
def test_an_integer_code_is_read_only_as_written(text: str) -> None:
    """Any text holding a digit is a code when it is exactly one of the description's codes
    (outer spaces aside), and an unknown label otherwise: never another code's label."""
    from prepro.labels import UnknownLabelError, canonical_label

    key = text.strip()
    try:
        got = canonical_label(text, FER_CODES)
    except UnknownLabelError:
        assert key not in FER_CODES
        return
    assert key in FER_CODES and got == FER_CODES[key], (text, got)


def test_fer2013_csv_signed_and_spaced_codes_are_listed_failures(tmp_path: Path) -> None:
    from prepro.readers import list_source
    from prepro.specs import load_spec

    emotions = ["-1", "6-", "- 0", "+3", "03", "1.0", "3", "6"]
    src = _fer_csv(tmp_path / "fer2013.csv", emotions)
    listing = list_source(str(src), "fer2013-csv", spec=load_spec("fer2013-csv"))
    assert [it.label for it in listing.items] == ["happy", "neutral"]
    reasons = {f.source: f.reason for f in listing.failures}
    for row, text in enumerate(emotions[:6]):
        reason = reasons[f"fer2013.csv:row={row}"]
        assert f"line {row + 2}" in reason and repr(text) in reason, reason


def test_label_file_codes_use_the_same_parser(tmp_path: Path) -> None:
    """AffectNet-style integer codes in a label file: "-8" is no "8" (not an expression) and "-1"
    is no "1" (happy): both are listed failures with their line."""
    from prepro.readers import list_source

    spec = tmp_path / "codes.toml"
    spec.write_text('name = "codes"\nformat = "labels"\n[labels]\n"0" = "neutral"\n"1" = "happy"\n'
                    '[non_expression_labels]\n"8" = "none"\n')
    (tmp_path / "img").mkdir()
    for n in range(4):
        (tmp_path / "img" / f"{n}.png").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,label\nimg/0.png,1\nimg/1.png,-1\nimg/2.png,-8\nimg/3.png,8\n")
    from prepro.specs import load_spec

    listing = list_source(str(tmp_path / "labels.csv"), "labels", spec=load_spec(str(spec)))
    assert [(it.source_id, it.label) for it in listing.items] == [("img/0.png", "happy")]
    reasons = [f.reason for f in listing.failures]
    assert any("'-1'" in r and "line 3" in r for r in reasons), reasons
    assert any("'-8'" in r and "line 4" in r and "unknown" in r for r in reasons), reasons
    assert any("'8'" in r and "not an expression" in r for r in reasons), reasons


# ---------------------------------------------------------------------------------------------
# Forged manifests and shards (issue 30 items 6, 7, 11, 12)

from tests.test_hostile import good_shards, no_traceback, run, tiny_model  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="module")
def fake_shards(tmp_path_factory) -> Path:
    from tests.shardfakes import make_fake_shards

    return make_fake_shards(tmp_path_factory.mktemp("fakes") / "shards", per_class={"train": 4, "val": 2, "test": 4},
                            shard_size=8)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _save_manifest(out: Path, m: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(m))


def _refused_everywhere(out: Path, tmp_path: Path, *words: str, model: Path | None = None) -> None:
    """verify, inspect, export, a rerun of preprocess (and evaluate with ``model``) end in a message
    naming the problem: never a traceback, never exit 0."""
    commands = [["verify", out], ["inspect", out], ["export", out, tmp_path / "exp", "-q"]]
    if (out / "manifest.json").is_file() and _manifest(out)["source"]["format"] != "synthetic":
        commands.append(["preprocess", _manifest(out)["source"]["path"], out, "-j", "1", "-q", "--shard-size", "8"])
    if model is not None:
        commands.append(["evaluate", model, out, "--split", "test", "--out", tmp_path / "eval"])
    for args in commands:
        r = run(*args)
        no_traceback(r)
        if args[0] == "preprocess":  # a rerun drops what it cannot use and makes it again
            assert r.exit_code == 0 and all(w in r.output for w in words), r.output
            continue
        assert r.exit_code != 0, f"{args[0]} said nothing: {r.output}"
        if args[0] != "export":  # export names the damaged shard once it selects its samples
            assert all(w in r.output for w in words), (args[0], r.output)


def test_a_manifest_listing_a_shard_twice_is_refused(tmp_path: Path, fake_shards: Path, tiny_model: Path) -> None:
    out = _copy(fake_shards, tmp_path / "shards")
    m = _manifest(out)
    m["shards"].append(m["shards"][-1])
    _save_manifest(out, m)
    _refused_everywhere(out, tmp_path, "twice", model=tiny_model)


@pytest.mark.parametrize("writer_id", ["../../../x", "", "ABCDEF0123456789", "0123456789abcdef/", "x" * 16])
def test_a_forged_writer_id_is_refused_where_the_manifest_is_loaded(tmp_path: Path, good_shards: Path,
                                                                     writer_id: str) -> None:
    out = _copy(good_shards, tmp_path / "a" / "b" / "c" / "shards")
    m = _manifest(out)
    m["writer_id"] = writer_id
    _save_manifest(out, m)
    before = sorted(p for p in tmp_path.rglob("*"))
    r = run("preprocess", m["source"]["path"], out, "-j", "1", "-q", "--shard-size", "8")
    no_traceback(r)
    assert r.exit_code != 0 and "writer_id" in r.output, r.output
    assert sorted(p for p in tmp_path.rglob("*")) == before
    with pytest.raises(DataError, match="writer_id"):
        from prepro.shards import Manifest

        Manifest.load(out)
