"""Hostile inputs on the training and prediction side (issues 30, 31 and 26): a run folder's own
files turned against it, the Python predict API given the wrong things, outputs that are devices,
pipes or a user's files, checkpoints that are finite but broken. Each case failed before its fix.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from test_chain import CONFIG
from test_hostile import _copy, _face_jpg, no_traceback, run, tiny_model  # noqa: F401 - tiny_model is a fixture

from prepro.errors import InputError


def _bgr_face() -> np.ndarray:
    """The public-domain astronaut's head in colour, in OpenCV's BGR order."""
    import cv2
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut()[20:240, 130:330], (100, 110))[..., ::-1])


def _aligned():
    from inference.predictions import PredictOptions

    return PredictOptions(overrides={"face": "aligned"})


def _save(ck: dict, path: Path) -> Path:
    import torch

    torch.save(ck, path)
    return path


def _checkpoint(tiny_model: Path) -> dict:
    import torch

    return torch.load(tiny_model / "best.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------
# The Python predict API (issue 31 item 1, issue 26 item 3)


def test_one_path_or_one_frame_is_one_input(tmp_path: Path, tiny_model: Path) -> None:
    from inference.predict import predict

    face = _face_jpg(tmp_path / "face.png")
    for one in (str(face), face):
        [r] = predict(tiny_model, one, _aligned())
        assert r.path == str(face) and r.faces
    bgr = _bgr_face()
    [r] = predict(tiny_model, bgr, _aligned())
    assert r.error is None and len(r.faces) == 1 and r.path == "<array 0>"
    got = [r.faces[0].probabilities for r in predict(tiny_model, [str(face), bgr], _aligned())]
    assert len(got) == 2 and got[1] == r.faces[0].probabilities


@pytest.mark.parametrize("bad", [None, b"/etc/passwd", 5, 2.5, {"a": 1}, [None], [str, "x"], [b"x"]])
def test_inputs_of_other_types_are_one_clear_message(tiny_model: Path, bad) -> None:
    from inference.predict import predict

    with pytest.raises(InputError, match="inputs"):
        list(predict(tiny_model, bad, _aligned()))


@pytest.mark.parametrize("field", [{"every": 0}, {"every": -3}, {"batch_size": 0}, {"batch_size": 10**9},
                                   {"jobs": 0}, {"jobs": -7}, {"min_quality": float("nan")},
                                   {"min_quality": 2.0}, {"every": 1.5}, {"batch_size": True}])
def test_out_of_range_predict_options_are_refused(field: dict) -> None:
    from inference.predictions import PredictOptions

    with pytest.raises(InputError):
        PredictOptions(**field)


def test_frames_in_bgr_bgra_and_grey_cut_alike(tmp_path: Path) -> None:
    import cv2

    from prepro.faces import CutSettings, FaceCutter
    from prepro.landmarks import LandmarkModelFile

    bgr = _bgr_face()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = np.dstack([bgr, np.full(grey.shape, 255, np.uint8)])
    cutter = FaceCutter(CutSettings(face_mode="aligned"), LandmarkModelFile.default())
    cuts = [cutter.cut(x, keep_image=True) for x in (grey, grey[..., None], bgr, bgra)]
    assert all(c.failure is None and len(c.faces) == 1 for c in cuts)
    for c in cuts[1:]:
        assert np.abs(c.gray.astype(int) - cuts[0].gray).max() <= 1
        assert np.abs(c.faces[0].face.landmarks - cuts[0].faces[0].face.landmarks).max() < 1.0


def test_colour_arrays_are_read_in_opencv_order() -> None:
    from prepro.image_io import ImageDecodeError, gray_from_array

    blue, red = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)
    blue[..., 0], red[..., 2] = 255, 255  # BGR: channel 0 is blue
    assert gray_from_array(blue)[0, 0] == 29 and gray_from_array(red)[0, 0] == 76  # ITU-R 601 weights
    half = np.dstack([red, np.full((2, 2), 128, np.uint8)])  # BGRA, alpha composited on black as for files
    assert gray_from_array(half)[0, 0] == 38
    for shape in ((4, 4, 2), (4, 4, 5), (4, 4, 3, 1), (0, 4, 3), (4,)):
        with pytest.raises(ImageDecodeError, match="array"):
            gray_from_array(np.zeros(shape, np.uint8))


def test_predictions_carry_the_68_landmarks(tmp_path: Path, tiny_model: Path) -> None:
    from inference.predict import predict

    face = _face_jpg(tmp_path / "face.png")
    [r] = predict(tiny_model, [str(face)], _aligned())
    marks = r.faces[0].landmarks
    assert len(marks) == 68 and all(len(p) == 2 for p in marks)
    assert -10 <= min(x for x, _ in marks) and max(x for x, _ in marks) <= 110
    out = run("predict", tiny_model, face, "--json", "-q", "--face", "aligned")
    assert out.exit_code == 0, out.output
    rec = json.loads(out.output.splitlines()[0])
    assert rec["faces"][0]["landmarks"] == marks


def test_the_summary_names_an_annotation_only_when_written(tmp_path: Path, tiny_model: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out.mp4"
    r = run("predict", tiny_model, broken, "--annotate", out, "-q")
    no_traceback(r)
    assert not out.exists() and "annotated in" not in r.output
    face = _face_jpg(tmp_path / "face.png")
    r = run("predict", tiny_model, face, "--annotate", out, "-q", "--face", "aligned")
    assert r.exit_code == 0 and out.is_file() and f"annotated in {out}" in r.output


# ---------------------------------------------------------------------------------------------
# Outputs that are a user's files, devices or pipes (issue 30 items 1-3)


@pytest.mark.parametrize("name", ["best.pt", "curves.png", "result.json"])
def test_train_never_replaces_a_users_file_in_a_new_run_folder(tmp_path: Path, name: str) -> None:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / name).write_bytes(b"the user's own")
    r = run("train", shards, run_dir, "--epochs", "1", "--batch-size", "8", "-q", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    no_traceback(r)
    assert r.exit_code != 0 and name in r.output
    assert (run_dir / name).read_bytes() == b"the user's own"
    assert sorted(p.name for p in run_dir.iterdir()) == [name]


def test_annotations_never_replace_a_users_file(tmp_path: Path, tiny_model: Path) -> None:
    face = _face_jpg(tmp_path / "in" / "img.png")
    ann = tmp_path / "ann"
    r = run("predict", tiny_model, face, "--annotate", ann, "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    [own] = list(ann.iterdir())
    r = run("predict", tiny_model, face, "--annotate", ann, "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output  # its own annotation is replaced
    own.write_bytes(b"my picture")
    r = run("predict", tiny_model, face, "--annotate", ann, "-q", "--face", "aligned")
    no_traceback(r)
    assert r.exit_code != 0 and own.name in r.output and own.read_bytes() == b"my picture"


def test_csv_to_stdout_a_device_or_a_pipe_writes_into_it(tmp_path: Path, tiny_model: Path) -> None:
    face = _face_jpg(tmp_path / "face.png")
    r = run("predict", tiny_model, face, "--csv", "-", "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))  # standard output carries the CSV alone
    assert rows[0][:3] == ["path", "frame", "time"] and [row[0] for row in rows[1:]] == [str(face)]
    assert "1 image or frame" in r.stderr
    r = run("predict", tiny_model, face, "--csv", "-", "--json", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "--csv -" in r.output
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    r = run("predict", tiny_model, face, "--csv", link, "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = run("predict", tiny_model, face, "--csv", fifo, "-q", "--face", "aligned")
    reader.join(30)
    assert r.exit_code == 0, r.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and got[0].startswith(b"path,frame,time")


def test_export_model_never_replaces_a_device_node(tmp_path: Path, tiny_model: Path) -> None:
    link = tmp_path / "null.onnx"
    link.symlink_to(os.devnull)
    nodes = [link]
    if os.geteuid() == 0:  # a node of its own, so that nothing outside the test folder is at stake
        os.mknod(tmp_path / "node.pt", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        nodes.append(tmp_path / "node.pt")
    for node in nodes:
        r = run("export-model", tiny_model, node, "--overwrite", "--format", "torchscript", "--no-check")
        no_traceback(r)
        assert r.exit_code != 0 and "not a regular file" in r.output
        assert stat.S_ISCHR(os.stat(node).st_mode) and node.is_symlink() == (node == link)


# ---------------------------------------------------------------------------------------------
# A run folder's own files (issue 31 items 2-3)


@pytest.fixture()
def stopped_run(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """A copy of the tiny run, its result removed so that it can resume, and its shards."""
    from tests.shardfakes import make_fake_shards

    run_dir = _copy(tiny_model, tmp_path / "run")
    (run_dir / "result.json").unlink()
    return make_fake_shards(tmp_path / "fake"), run_dir


@pytest.mark.parametrize("craft", ["history_wrong_type", "history_missing_keys", "history_nan", "best_metric_nan",
                                   "best_metric_inf", "best_metric_huge", "huge_epochs", "huge_lr", "duplicate_classes",
                                   "best_epoch_beyond"])
def test_a_resumed_run_trusts_nothing_in_last_pt(stopped_run: tuple[Path, Path], craft: str) -> None:
    import torch

    shards, run_dir = stopped_run
    last = run_dir / "last.pt"
    ck = torch.load(last, weights_only=True)
    if craft == "history_wrong_type":
        ck["history"] = [{"epoch": "x"}]
    elif craft == "history_missing_keys":
        ck["history"] = [{"epoch": 1}]
    elif craft == "history_nan":
        ck["history"][0]["val_loss"] = float("nan")
    elif craft == "best_metric_nan":
        ck["best_metric"] = float("nan")
    elif craft == "best_metric_inf":
        ck["best_metric"] = float("inf")
    elif craft == "best_metric_huge":
        ck["best_metric"] = 1e300
    elif craft == "huge_epochs":
        ck["config"]["epochs"] = 10**400
    elif craft == "huge_lr":
        ck["config"]["lr"] = 10**400
    elif craft == "duplicate_classes":
        ck["class_names"] = ["happy"] * len(ck["class_names"])
    elif craft == "best_epoch_beyond":
        ck["best_epoch"] = ck["epoch"] + 5
    _save(ck, last)
    r = run("train", shards, run_dir, "--resume", "-q", "--epochs", "2")
    no_traceback(r)
    assert r.exit_code != 0 and str(last) in r.output, r.output


@pytest.mark.parametrize("names", [["happy", "happy", "sad"], ["happy", "sad\x1b[31m", "surprise"],
                                   ["happy", "", "sad"], ["happy", "sad\n", "surprise"]])
def test_class_names_must_be_distinct_and_printable(tmp_path: Path, tiny_model: Path, names: list[str]) -> None:
    from tests.shardfakes import make_fake_shards

    ck = _checkpoint(tiny_model)
    ck["class_names"] = names
    bad = _save(ck, tmp_path / "bad.pt")
    face = _face_jpg(tmp_path / "face.png")
    shards = make_fake_shards(tmp_path / "fake")
    for args in (["predict", bad, face, "-q"], ["evaluate", bad, shards]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0 and "class_names" in r.output and "\x1b" not in r.output


def test_a_checkpoint_with_a_string_for_a_table_is_one_message(tmp_path: Path, tiny_model: Path) -> None:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    face = _face_jpg(tmp_path / "face.png")
    for where in ("preprocessing", "blocks", "detection"):
        ck = _checkpoint(tiny_model)
        if where == "preprocessing":
            ck["preprocessing"] = "x"
        else:
            ck["preprocessing"][where] = "x"
        bad = _save(ck, tmp_path / f"{where}.pt")
        said = []
        for args in (["predict", bad, face, "-q"], ["evaluate", bad, shards]):
            r = run(*args)
            no_traceback(r)
            assert r.exit_code != 0, r.output
            said.append(r.output.strip().splitlines()[-1])
        assert said[0] == said[1] and "preprocessing" in said[0]


@pytest.mark.parametrize("craft", ["huge_weights", "negative_variance"])
def test_broken_weights_never_give_a_label(tmp_path: Path, tiny_model: Path, craft: str) -> None:
    import torch

    from tests.shardfakes import make_fake_shards

    ck = _checkpoint(tiny_model)
    for k, v in ck["model"].items():
        if craft == "huge_weights" and v.is_floating_point() and v.ndim > 1:
            ck["model"][k] = torch.full_like(v, 3e38)
        if craft == "negative_variance" and k.endswith("running_var"):
            ck["model"][k] = torch.full_like(v, -1.0)
    bad = _save(ck, tmp_path / "bad.pt")
    face = _face_jpg(tmp_path / "face.png")
    shards = make_fake_shards(tmp_path / "fake")
    for args in (["predict", bad, face, "-q", "--face", "aligned"], ["predict", bad, face, "--json", "-q", "--face",
                                                                    "aligned"],
                 ["evaluate", bad, shards, "--json"], ["evaluate", bad, shards]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0 and not re.search(r"\bnan\b", r.output.lower()), r.output
        assert "not finite" in r.output or "negative" in r.output, r.output


# ---------------------------------------------------------------------------------------------
# Numbers too large for a float (issue 30 item 8)


@pytest.mark.parametrize("line", ["epochs = 1" + "0" * 400, "lr = 1" + "0" * 400, "threads = -1" + "0" * 400,
                                  "seed = 1" + "0" * 400])
def test_a_400_digit_integer_in_a_config_is_a_message(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[run]\nout = 'out'\n[data]\nsource = 'nowhere'\n[train]\n{line}\n")
    r = run("run", cfg)
    no_traceback(r)
    assert r.exit_code != 0 and line.split()[0] in r.output and not (tmp_path / "out").exists()


def test_every_setting_refuses_a_huge_integer() -> None:
    from prepro.config import PreprocessConfig
    from prepro.settings import from_mapping, options
    from training.config import TrainConfig

    for cls in (TrainConfig, PreprocessConfig):
        for o in options(cls):
            if o.spec.kind in ("int", "float"):
                with pytest.raises(InputError, match=o.name):
                    from_mapping(cls, {o.name: 10**400})


# ---------------------------------------------------------------------------------------------
# A checkpoint that does not fit on the disk (issue 30 item 10)


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, raw, room: int):
        self.raw, self.room = raw, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.raw.write(b)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def test_a_checkpoint_that_does_not_fit_is_a_message(tmp_path: Path, monkeypatch) -> None:
    import prepro.outputs as outputs
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    real = os.fdopen
    # Only files opened for writing meet the full disk (the manifest's failure lists are read back).
    monkeypatch.setattr(outputs.os, "fdopen", lambda fd, mode="r", **kw: _FullDisk(real(fd, mode), 2000)
                        if "b" in mode and mode[0] in "wa" else real(fd, mode, **kw))
    r = run("train", shards, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "-q", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    no_traceback(r)
    assert r.exit_code != 0 and "no space left on device" in r.output.lower(), r.output
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# `faceblocks run` and the records in its folder (issue 31 item 3)


@pytest.fixture(scope="module")
def chain_project(tmp_path_factory) -> Path:
    from prepro.synthetic import make_sample

    root = tmp_path_factory.mktemp("chain")
    sample = tmp_path_factory.mktemp("chain-sample")  # outside the project: a copy of it reads the same source
    make_sample(sample, per_class=4, expressions=("happy", "sad", "surprise"))
    (root / "run.toml").write_text(CONFIG.replace('source = "sample"', f'source = "{sample}"'))
    r = run("run", root / "run.toml", "-q")
    assert r.exit_code == 0, r.output
    return root


def _edit_json(path: Path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("craft", [
    ("run/result.json", lambda d: d.update(best_val_macro_f1="x")),
    ("run/result.json", lambda d: d.update(best_val_macro_f1=float("nan"))),
    ("run/result.json", lambda d: d.pop("stop_reason")),
    ("run/result.json", lambda d: d.update(best_epoch=[1])),
    ("eval-test/metrics.json", lambda d: d.pop("accuracy")),
    ("eval-test/metrics.json", lambda d: d.update(accuracy=float("nan"))),
    ("eval-test/metrics.json", lambda d: d.update(macro_f1="high")),
    ("eval-test/metrics.json", lambda d: d.update(per_class={"happy": {"precision": None}})),
    ("eval-test/metrics.json", lambda d: d.update(n_samples=-1)),
    ("eval-val/metrics.json", lambda d: d["region_weights_per_class"].update(happy={"eyes": float("nan")})),
], ids=lambda c: f"{c[0]}-{id(c[1])}")
def test_run_never_trusts_its_folders_records(tmp_path: Path, chain_project: Path, craft) -> None:
    root = _copy(chain_project, tmp_path / "p")
    rel, edit = craft
    _edit_json(root / "out" / rel, edit)
    r = run("run", root / "run.toml", "-q")
    no_traceback(r)
    if r.exit_code != 0:  # refused: a record faceblocks cannot prove it wrote is never replaced
        assert rel.split("/")[-1] in r.output and "was not written by faceblocks" in r.output, r.output
        return
    assert not re.search(r"\bnan\b", (root / "out" / "report.md").read_text().lower())
    stage = "train" if rel.startswith("run/") else "evaluate"
    assert [ln.split()[1] for ln in r.output.splitlines() if ln.startswith(stage + " ")] == ["ran"], r.output
    json.loads((root / "out" / rel).read_text(), parse_constant=lambda c: pytest.fail(f"{rel} holds {c}"))


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=5)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def test_forged_record_values_are_refused_never_raised(chain_project: Path) -> None:
    """Any JSON value at any key of a result.json, a metrics.json or a history row: the check
    answers (accepts or names the problem) and never raises; what it accepts formats (a number, or
    the None of a run without validation)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from training.evaluate import metrics_problem
    from training.run_records import best_text, history_ok, result_problem

    result = json.loads((chain_project / "out" / "run" / "result.json").read_text())
    metrics = json.loads((chain_project / "out" / "eval-test" / "metrics.json").read_text())
    row = dict(result["last"])

    @settings(max_examples=300, derandomize=True, deadline=None, database=None)
    @given(st.sampled_from(["result", "metrics", "row"]), st.data(), _json_values())
    def check(which: str, data, value) -> None:
        record = {"result": result, "metrics": metrics, "row": row}[which]
        forged = json.loads(json.dumps(record))
        forged[data.draw(st.sampled_from(sorted(forged)))] = value
        if which == "result" and result_problem(forged) is None:
            f"{best_text(forged['best_val_macro_f1'], forged['best_epoch'])} {forged['epochs_done']:d}"
        if which == "metrics" and metrics_problem(forged) is None:
            f"{forged['accuracy']:.4f} {forged['macro_f1']:.4f} {forged['n_samples']:d}"
        if which == "row":
            history_ok([forged], 1)

    check()
