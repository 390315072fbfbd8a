"""Every command through click's CliRunner: help, version, errors as one line, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from shardfakes import make_fake_shards
from test_pipeline import make_source

from cli import main
from prepro import __version__

COMMANDS = ["preprocess", "inspect", "verify", "train", "evaluate", "predict", "export", "preview", "run", "demo",
            "models", "export-model"]


@pytest.fixture()
def runner():
    return CliRunner()


def test_help_and_version(runner):
    r = runner.invoke(main, ["-h"])
    assert r.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in r.output
    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0 and f"faceblocks {__version__}" in r.output
    assert "iBUG 300-W" in r.output  # the terms of the landmark model are shown with the version


def test_help_loads_nothing_heavy():
    # `faceblocks -h` builds every option from the settings classes: none of them may need numpy.
    code = ("import sys; sys.argv = ['faceblocks', '-h']; import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('numpy', 'torch', 'cv2', 'dlib', 'h5py') if m in sys.modules])")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_examples(runner, cmd):
    r = runner.invoke(main, [cmd, "-h"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output


def test_new_option_names(runner):
    r = runner.invoke(main, ["preprocess", "-h"])
    for option in ("--landmark-model", "--detector", "--min-face", "--retry-failed", "--eyes-size", "--jobs"):
        assert option in r.output, option
    assert "--predictor" not in r.output


def test_preprocess_inspect_verify(runner, tmp_path):
    make_source(tmp_path / "src")
    out = tmp_path / "out"
    r = runner.invoke(main, ["preprocess", str(tmp_path / "src"), str(out), "--face", "aligned", "-j", "1",
                             "-q", "--shard-size", "4"])
    assert r.exit_code == 0, r.output
    assert "could not be used" in r.output and "faceblocks inspect" in r.output
    r = runner.invoke(main, ["inspect", str(out), "--json"])
    assert r.exit_code == 0
    s = json.loads(r.output)
    assert {"samples", "failed", "splits", "failures"} <= set(s)
    assert isinstance(s["samples"], int) and s["failed"] == len(s["failures"]) > 0
    assert all({"source", "reason"} <= set(f) for f in s["failures"])
    assert sum(sum(v.values()) for v in s["splits"].values()) == s["samples"]
    r = runner.invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "failures" in r.output and "happy" in r.output
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 0 and "0 problems" in r.output
    shard = sorted((out / "shards").glob("*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 1 and shard.name in r.output
    r = runner.invoke(main, ["inspect", str(out)])  # counts without the damaged shard, which is named
    assert r.exit_code == 1 and f"DAMAGED shards/{shard.name}" in r.output


def test_strict_makes_failures_an_error(runner, tmp_path):
    make_source(tmp_path / "src")
    r = runner.invoke(main, ["preprocess", str(tmp_path / "src"), str(tmp_path / "out"), "--face", "aligned",
                             "-j", "1", "-q", "--strict"])
    assert r.exit_code == 1


def test_source_errors_are_one_line(runner, tmp_path):
    r = runner.invoke(main, ["preprocess", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main, ["preprocess", str(tmp_path / "empty"), str(tmp_path / "out"), "-q"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1


def test_other_parameters_refused(runner, tmp_path):
    make_source(tmp_path / "src", bad=False)
    args = ["preprocess", str(tmp_path / "src"), str(tmp_path / "out"), "--face", "aligned", "-j", "1", "-q"]
    assert runner.invoke(main, args).exit_code == 0
    r = runner.invoke(main, args + ["--mouth-size", "24x48"])
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert runner.invoke(main, args + ["--mouth-size", "24x48", "--overwrite"]).exit_code == 0


def test_bad_option_values(runner, tmp_path):
    make_source(tmp_path / "src", bad=False)
    args = ["preprocess", str(tmp_path / "src"), str(tmp_path / "out")]
    r = runner.invoke(main, args + ["--eyes-size", "big"])
    assert r.exit_code == 2 and "HEIGHTxWIDTH" in r.output
    r = runner.invoke(main, args + ["--face", "guess"])
    assert r.exit_code == 2 and "aligned" in r.output
    r = runner.invoke(main, args + ["--detector", "haar"])
    assert r.exit_code == 2 and "hog+cnn" in r.output
    r = runner.invoke(main, args + ["--min-face", "2"])
    assert r.exit_code == 2 and "--min-face" in r.output
    r = runner.invoke(main, args + ["--eyes-size", "2x96"])
    assert r.exit_code == 1 and "eyes_size" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, args + ["--max-megapixels", "nan", "-q"])  # NaN passes click's range check ...
    assert r.exit_code == 1 and "max_megapixels" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(main, args + ["--max-megapixels", "inf", "-q"])  # ... infinity does not
    assert r.exit_code == 2 and "--max-megapixels" in r.output
    r = runner.invoke(main, args + ["--landmark-model", str(tmp_path / "missing.dat"), "-q"])
    assert r.exit_code == 1 and "missing.dat" in r.output and len(r.output.strip().splitlines()) == 1
    (tmp_path / "junk.dat").write_bytes(b"junk")
    r = runner.invoke(main, args + ["--landmark-model", str(tmp_path / "junk.dat"), "-q"])
    assert r.exit_code == 1 and "not a dlib landmark model" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_retry_failed_option(runner, tmp_path):
    from PIL import Image
    from test_pipeline import _face_like

    make_source(tmp_path / "src", bad=False)
    (tmp_path / "src" / "sad" / "late.png").write_bytes(b"")
    args = ["preprocess", str(tmp_path / "src"), str(tmp_path / "out"), "--face", "aligned", "-j", "1", "-q"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0 and "12 samples" in r.output and "1 of 13 inputs could not be used" in r.output
    Image.fromarray(_face_like(7)).save(tmp_path / "src" / "sad" / "late.png")
    assert "0 written now" in runner.invoke(main, args).output
    r = runner.invoke(main, args + ["--retry-failed"])
    assert r.exit_code == 0 and "13 samples" in r.output and "1 written now" in r.output, r.output


def test_shipped_model_names(runner, tmp_path):
    from training.zoo import shipped_names

    r = runner.invoke(main, ["models", "--json"])
    assert r.exit_code == 0 and set(json.loads(r.output)) == set(shipped_names())
    r = runner.invoke(main, ["predict", "no-such-model", str(tmp_path)])
    assert r.exit_code == 1 and "neither a run folder" in r.output and "Traceback" not in r.output


def test_train_and_evaluate(runner, tmp_path):
    shards = make_fake_shards(tmp_path / "shards", eyes_size=(32, 96), mouth_size=(32, 64), face_size=(64, 64))
    run = tmp_path / "run"
    r = runner.invoke(main, ["train", str(shards), str(run), "--epochs", "2", "--batch-size", "16", "-q"])
    assert r.exit_code == 0, r.output
    assert (run / "best.pt").is_file() and (run / "log.csv").is_file() and (run / "curves.png").is_file()
    r = runner.invoke(main, ["train", str(shards), str(run), "--epochs", "2", "-q"])
    assert r.exit_code == 1 and "resume" in r.output.lower()  # an existing run is not clobbered
    r = runner.invoke(main, ["train", str(shards), str(run), "--resume", "--lr", "0.1"])
    assert r.exit_code == 1 and "cannot change lr" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["train", str(shards), str(run), "--resume", "--epochs", "3", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["evaluate", str(run), str(shards), "--split", "test", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert 0 <= m["accuracy"] <= 1 and (run / "metrics.json").is_file()
    r = runner.invoke(main, ["evaluate", str(run), str(shards), "--split", "val"])
    assert r.exit_code == 0 and "macro" in r.output.lower()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = runner.invoke(main, ["evaluate", str(bad), str(shards)])
    assert r.exit_code == 1 and "Traceback" not in r.output
