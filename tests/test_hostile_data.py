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
        commands.append(["preprocess", _manifest(out)["source"]["path"], out, "-j", "1", "--shard-size", "8"])
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


def _replace_dataset(f, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


# (field, a forged value for every sample, as numpy data of the forged dtype)
_FORGERIES = st.one_of(
    st.tuples(st.just("label"), st.sampled_from([100, -5, -2, 8, 127, -128]).map(lambda v: np.int8(v))),
    st.tuples(st.just("label"), st.sampled_from([2 ** 40, -(2 ** 40), 3]).map(lambda v: np.int64(v))),
    st.tuples(st.just("label"), st.one_of(st.floats(-3, 10), st.just(float("nan"))).map(lambda v: np.float32(v))),
    st.tuples(st.just("split"), st.sampled_from([0, 1, 3, 255]).map(np.uint8)),
    st.tuples(st.just("box_method"), st.sampled_from([5, 9, 255]).map(np.uint8)),
    st.tuples(st.sampled_from(["quality", "det_score", "landmarks", "box", "eyes_affine", "face_affine"]),
              st.sampled_from([np.inf, -np.inf, np.nan]).map(np.float32)),
    st.tuples(st.just("quality"), st.sampled_from([1.5, -0.25]).map(np.float32)),
    st.tuples(st.just("image_size"), st.sampled_from([0, -48]).map(np.int32)),
    st.tuples(st.sampled_from(["quality", "landmarks", "image_size"]), st.just(np.float64(0.5))),
)


def _forge(out: Path, name: str, value, rows: str) -> str:
    """Set ``name`` of the folder's last shard to ``value`` (its shape kept, its dtype that of
    ``value``) in every sample (``rows`` "all") or the last one, with the checksum recomputed.
    Returns that shard's split."""
    from tests.shardfakes import edit_shards

    last = _manifest(out)["shards"][-1]

    def edit(f, _k):
        if f.filename.endswith(last["file"]):
            data = f[name][()].astype(np.asarray(value).dtype)
            if rows == "all":
                data[...] = value
            else:
                data[-1] = value
            _replace_dataset(f, name, data)

    edit_shards(out, edit)
    return last["split"]


@FUZZ
@given(forgery=_FORGERIES, rows=st.sampled_from(["all", "last"]))
def test_forged_shard_values_are_a_damaged_shard(tmp_path_factory, fake_shards: Path, forgery, rows: str) -> None:
    """A shard whose arrays hold what no reader can use (a label outside the names, a float label,
    another split, a non-finite number, another dtype), its checksum recomputed: verify names it,
    and every reader refuses it with the same words instead of reading it."""
    from prepro.shards import ShardReader, summarize, verify

    name, value = forgery
    if name == "det_score" and np.isnan(value):
        return  # NaN is what a box that did not come from a detector has: no forgery
    out = _copy(fake_shards, tmp_path_factory.mktemp("forged") / "shards")
    split = _forge(out, name, value, rows)
    report = verify(out)
    assert not report.whole and len(report.problems) == 1 and name in report.problems[0], report.problems
    with pytest.raises(DataError, match=name):
        ShardReader(out, split=split)
    assert summarize(out)["damaged"] == report.problems


@pytest.mark.parametrize("name,value", [("label", np.int8(-5)), ("label", np.float32(2.5)),
                                        ("label", np.int64(2 ** 40)), ("quality", np.float32(np.nan))])
def test_forged_values_never_reach_a_count(tmp_path: Path, fake_shards: Path, tiny_model: Path, name: str,
                                           value) -> None:
    out = _copy(fake_shards, tmp_path / "shards")
    _forge(out, name, value, "all")
    _refused_everywhere(out, tmp_path, name, model=tiny_model)


def test_a_rerun_of_preprocess_remakes_a_forged_shard(tmp_path: Path, good_shards: Path) -> None:
    out = _copy(good_shards, tmp_path / "shards")
    _forge(out, "label", np.int8(100), "all")
    _refused_everywhere(out, tmp_path, "label")
    from prepro.shards import verify

    assert verify(out).whole


def _link_in_shard(f, kind: str, other: Path, raw: Path) -> None:
    """Replace the label array of an open shard by a link of ``kind`` to ``other`` (a shard) or by
    external storage in ``raw``."""
    import h5py

    if kind == "extra_external_link":
        f["extra"] = h5py.ExternalLink(str(other), "/label")
        return
    labels = f["label"][()]
    del f["label"]
    if kind == "soft_link":
        f["label"] = h5py.SoftLink("/box_method")
    elif kind == "external_link":
        f["label"] = h5py.ExternalLink(str(other), "/label")
    elif kind in ("external_storage", "external_fifo"):
        raw.write_bytes(labels.astype(np.int8).tobytes())
        f.create_dataset("label", shape=labels.shape, dtype=np.int8, external=[(str(raw), 0, labels.size)])


@pytest.mark.parametrize("kind", ["soft_link", "external_link", "extra_external_link", "external_storage",
                                  "external_fifo"])
def test_hdf5_links_and_external_storage_are_refused(tmp_path: Path, fake_shards: Path, kind: str) -> None:
    """A shard that reads data from elsewhere (another file, a FIFO, another of its own arrays),
    its checksum recomputed: verify refuses it before reading it, and never hangs on a FIFO."""
    import subprocess
    import sys

    from tests.shardfakes import edit_shards

    other = _copy(fake_shards, tmp_path / "other")
    out = _copy(fake_shards, tmp_path / "shards")
    first = out / _manifest(out)["shards"][0]["file"]
    target = other / _manifest(other)["shards"][0]["file"]
    edit_shards(out, lambda f, k: _link_in_shard(f, kind, target, tmp_path / "labels.raw") if f.filename == str(first) else None)
    if kind == "external_fifo":
        (tmp_path / "labels.raw").unlink()
        os.mkfifo(tmp_path / "labels.raw")
    code = ("import sys; from prepro.shards import verify; r = verify(sys.argv[1]); "
            "print('whole' if r.whole else r.problems[0])")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert said.startswith(first.name) or "shards/" in said, said
    assert "link" in said.lower() or "stored" in said or "never writes" in said, said
    _refused_everywhere(out, tmp_path, first.name)


def test_a_symlinked_shard_or_shard_folder_is_refused(tmp_path: Path, fake_shards: Path) -> None:
    """A shard (or the whole shards/ folder) replaced by a link to another folder's identical file:
    its checksum matches, but it is not this folder's; verify refuses it and readers never read it."""
    other = _copy(fake_shards, tmp_path / "other")
    out = _copy(fake_shards, tmp_path / "one")
    rel = _manifest(out)["shards"][0]["file"]
    (out / rel).unlink()
    (out / rel).symlink_to(other / rel)
    _refused_everywhere(out, tmp_path / "x", "symbolic link")
    folder = _copy(fake_shards, tmp_path / "two")
    shutil.rmtree(folder / "shards")
    (folder / "shards").symlink_to(other / "shards")
    _refused_everywhere(folder, tmp_path / "y", "outside the folder")


def test_a_shard_linked_to_a_fifo_never_hangs(tmp_path: Path, good_shards: Path) -> None:
    out = _copy(good_shards, tmp_path / "shards")
    rel = _manifest(out)["shards"][0]["file"]
    (out / rel).unlink()
    os.mkfifo(tmp_path / "fifo")
    (out / rel).symlink_to(tmp_path / "fifo")
    _refused_everywhere(out, tmp_path, "symbolic link")
    assert (out / rel).is_symlink()  # not the folder's: left where it is


# ---------------------------------------------------------------------------------------------
# faceblocks' own files turned against it, full disks (issue 31 items 4 and 7, issue 30 item 10)


def test_shards_replaced_by_a_file_is_a_message(tmp_path: Path, good_shards: Path) -> None:
    out = _copy(good_shards, tmp_path / "shards")
    shutil.rmtree(out / "shards")
    (out / "shards").write_text("the user's notes\n")
    r = run("preprocess", _manifest(out)["source"]["path"], out, "-j", "1", "-q", "--shard-size", "8")
    no_traceback(r)
    assert r.exit_code != 0 and "not a folder" in r.output, r.output
    assert (out / "shards").read_text() == "the user's notes\n"


def test_write_shard_cleanup_never_raises_again(tmp_path: Path) -> None:
    """The folder a shard goes into is a file: one OutputError, not a second exception from the cleanup."""
    from prepro.errors import OutputError
    from prepro.shards import write_shard

    (tmp_path / "shards").write_text("x")
    with pytest.raises(OutputError, match="not a directory|Not a directory"):
        write_shard(tmp_path / "shards" / "train-00000.h5", [object()], {}, "0123456789abcdef")


@pytest.mark.parametrize("fields", ["eyes", ["eyes", "label"], ("nose",)])
def test_shard_reader_fields_are_names_or_a_message(fake_shards: Path, fields) -> None:
    from prepro.shards import ShardReader

    reader = ShardReader(fake_shards, split="train")
    wanted = [fields] if isinstance(fields, str) else list(fields)
    if "nose" in wanted:
        for call in (lambda: reader.get(0, fields=fields), lambda: reader.load_all(fields=fields)):
            with pytest.raises(InputError, match="nose.*allowed"):
                call()
        return
    assert sorted(reader.get(0, fields=fields)) == sorted(wanted)
    assert sorted(reader.load_all(fields=fields)) == sorted(wanted)


@pytest.mark.parametrize("where", ["lock", "manifest"])
def test_a_full_disk_while_taking_the_folder_is_a_message(tmp_path: Path, good_shards: Path, monkeypatch,
                                                          where: str) -> None:
    import errno

    out = _copy(good_shards, tmp_path / "shards")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "lock":
        monkeypatch.setattr(os, "pwrite", full)
    else:
        m = _manifest(out)
        m["complete"] = False  # a rerun then saves the manifest
        _save_manifest(out, m)
        import prepro.outputs

        monkeypatch.setattr(prepro.outputs.os, "fsync", full)
    r = run("preprocess", _manifest(out)["source"]["path"], out, "-j", "1", "-q", "--shard-size", "8")
    no_traceback(r)
    assert r.exit_code != 0 and "no space left on device" in r.output.lower(), r.output


# ---------------------------------------------------------------------------------------------
# Regexes from dataset descriptions (issue 31 item 5)

_ATOMS = st.sampled_from(["a", r"\d", r"\w", ".", "[a-z]", "(?:ab)"])
_VARIABLE = st.sampled_from(["+", "*", "?", "{1,40}", "{0,}"])


@st.composite
def _costly_patterns(draw) -> str:
    """Patterns of the exponential and high-polynomial families: nested quantifiers, quantified
    alternations, three or more stacked unbounded quantifiers."""
    a, b = draw(_ATOMS), draw(_ATOMS)
    kind = draw(st.sampled_from(["nested", "alternation", "stacked"]))
    if kind == "nested":
        return f"^({a}{draw(_VARIABLE)}){draw(st.sampled_from(['+', '*', '{2,}', '{30}']))}$"
    if kind == "alternation":
        return f"^({a}|{a}{b}){draw(st.sampled_from(['+', '*', '{2,9}']))}$"
    return f"({a}*)" + "".join(f"{draw(_ATOMS)}{draw(st.sampled_from(['*', '+', '{0,99}']))}"
                               for _ in range(draw(st.integers(2, 4)))) + "!"


@FUZZ
@given(pattern=_costly_patterns())
def test_costly_subject_patterns_are_refused_when_the_description_is_loaded(tmp_path_factory, pattern) -> None:
    from prepro.specs import load_spec

    spec = tmp_path_factory.mktemp("spec") / "costly.toml"
    spec.write_text(f"name = \"costly\"\nformat = \"flat\"\nsubject_pattern = '{pattern}'\n")
    with pytest.raises(InputError, match="costly.toml.*subject_pattern.*unbounded time"):
        load_spec(str(spec))


def test_an_allowed_pattern_over_long_crafted_names_finishes(tmp_path: Path) -> None:
    """The worst a pattern that passes can do: two stacked quantifiers over names that almost
    match (file names are at most 255 bytes; a longer text is refused unmatched)."""
    import time

    from prepro.readers import list_source
    from prepro.specs import load_spec

    spec = tmp_path / "two.toml"
    spec.write_text("name = \"two\"\nformat = \"flat\"\nsubject_pattern = '(\\d*)\\d*x'\n")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("1" * 200 + ".png", "2" * 251 + ".png"):
        (src / name).write_bytes(b"")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="does not match the subject pattern"):
        list_source(str(src), "flat", spec=load_spec(str(spec)))
    assert time.perf_counter() - t0 < 10
    for name in ("jaffe", "ckplus"):
        load_spec(name)  # the shipped patterns pass
    from prepro.readers.names import subject_from_name

    assert "longer than 255" in subject_from_name("3" * 300 + ".png", load_spec(str(spec)))[1]


# ---------------------------------------------------------------------------------------------
# Many failures: bounded cost per shard, exact resume, old manifests (issue 30 item 16)


def _manifest_with_failures(n: int) -> "object":
    from prepro.shards import Manifest

    m = Manifest(params={}, source={"path": "x"}, label_names=["happy"], split_names=["train", "val", "test"],
                 box_methods=["hog"], block_sizes={"eyes": [1, 1], "mouth": [1, 1], "face": [1, 1]},
                 landmark_model={}, writer_id="0123456789abcdef")
    m.listing_failures = [{"source": f"junk:line={i}", "reason": "too few columns"} for i in range(n)]
    return m


def test_failures_are_not_rewritten_with_every_manifest_save(tmp_path: Path) -> None:
    """A folder with 20 000 listing failures and a growing list of processing failures: after the
    first save, each save writes a small manifest and appends only the new failures."""
    from prepro.shards import Manifest

    m = _manifest_with_failures(20_000)
    m.save(tmp_path)
    for k in range(5):
        m.failures.extend({"source": f"img{k}-{i}.png", "reason": "no face found", "split": "train"}
                          for i in range(100))
        m.save(tmp_path)
    assert (tmp_path / "manifest.json").stat().st_size < 4096, "the manifest holds the failures themselves"
    back = Manifest.load(tmp_path)
    assert back.listing_failures == m.listing_failures and back.failures == m.failures
    assert back.to_dict() == m.to_dict()


def test_a_killed_save_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    """Failures appended and then the run killed before the manifest was saved: the next load reads
    exactly the failures the manifest accounts for, and the next save drops the extra tail."""
    import prepro.manifest
    from prepro.shards import Manifest

    m = _manifest_with_failures(3)
    m.failures.append({"source": "a.png", "reason": "r", "split": "train"})
    m.save(tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    m.failures.append({"source": "b.png", "reason": "r", "split": "train"})
    monkeypatch.setattr(prepro.manifest, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        m.save(tmp_path)
    monkeypatch.undo()
    back = Manifest.load(tmp_path)
    assert [f["source"] for f in back.failures] == ["a.png"]
    back.failures.append({"source": "c.png", "reason": "r", "split": "train"})
    back.save(tmp_path)
    assert [f["source"] for f in Manifest.load(tmp_path).failures] == ["a.png", "c.png"]


def test_an_old_manifest_with_inline_failures_is_read_and_converted(tmp_path: Path, fake_shards: Path) -> None:
    from prepro.shards import Manifest, verify

    out = _copy(fake_shards, tmp_path / "shards")
    d = _manifest(out)
    d["failures"] = [{"source": "x.png", "reason": "no face found", "split": "train"}]
    d["listing_failures"] = [{"source": "y.txt", "reason": "not an image file"}]
    _save_manifest(out, d)
    m = Manifest.load(out)
    assert m.failures == d["failures"] and m.listing_failures == d["listing_failures"] and verify(out).whole
    m.save(out)
    assert Manifest.load(out).all_failures == d["listing_failures"] + d["failures"]


@pytest.mark.parametrize("forgery", ["../x.jsonl", "link", "short", "not_json", "bad_entry", "count"])
def test_a_forged_failures_file_is_a_damaged_manifest(tmp_path: Path, fake_shards: Path, forgery: str) -> None:
    from prepro.shards import Manifest

    out = _copy(fake_shards, tmp_path / "shards")
    m = Manifest.load(out)
    m.failures.append({"source": "x.png", "reason": "no face found", "split": "train"})
    m.save(out)
    d = _manifest(out)
    record = d["failures"]
    path = out / record["file"]
    if forgery == "../x.jsonl":
        record["file"] = forgery
    elif forgery == "link":
        (tmp_path / "elsewhere.jsonl").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.jsonl")
    elif forgery == "short":
        path.write_bytes(path.read_bytes()[:5])
    elif forgery == "not_json":
        path.write_bytes(b"{" * record["bytes"])
    elif forgery == "bad_entry":
        line = json.dumps({"source": 1}).encode() + b"\n"
        path.write_bytes(line)
        record["bytes"] = len(line)
    elif forgery == "count":
        record["count"] = 5
    _save_manifest(out, d)
    with pytest.raises(DataError, match="failures"):
        Manifest.load(out)
    r = run("verify", out)
    no_traceback(r)
    assert r.exit_code != 0


def test_a_killed_manifest_save_leaves_nothing_after_the_next_run(tmp_path: Path, good_shards: Path) -> None:
    """A `.manifest.json.*.tmp` left by a run killed while saving (SIGTERM): the next run removes it
    when its name carries the folder's writer id, and leaves any other such name alone."""
    out = _copy(good_shards, tmp_path / "shards")
    wid = _manifest(out)["writer_id"]
    ours, other = out / f".manifest.json.{wid}.tmp", out / ".manifest.json.abc123.tmp"
    ours.write_text("{half")
    other.write_text("someone's")
    r = run("preprocess", _manifest(out)["source"]["path"], out, "-j", "1", "-q", "--shard-size", "8")
    assert r.exit_code == 0, r.output
    assert not ours.exists() and other.read_text() == "someone's"
    from prepro.shards import Manifest

    m = Manifest.load(out)
    m.save(out)
    assert ours.name not in [p.name for p in out.iterdir()]  # a finished save leaves no temporary file
