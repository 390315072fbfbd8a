"""`faceblocks run CONFIG`: the chain runs every stage, skips finished ones, resumes, and rejects bad configs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from shardfakes import damage_block_data

from cli import main
from prepro.synthetic import make_sample
from prepro.errors import InputError, MismatchError, OutputError
from prepro.shards import verify
from training.chain import load_config, run_chain
from training.chain_config import template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG = """
[run]
out = "out"

[data]
source = "sample"
val_frac = 0.25
test_frac = 0.25
jobs = 1

[train]
epochs = 2
batch_size = 4
model_kwargs = {widths = [4, 8], feat_dim = 16}

[evaluate]
splits = ["val", "test"]

[preview]
count = 6
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chain")
    make_sample(root / "sample", per_class=4, expressions=("happy", "sad", "surprise"))
    return root / "sample"


def _project(tmp_path: Path, sample: Path, text: str = CONFIG) -> Path:
    """A folder holding the sample and a config next to it (paths in the config are relative)."""
    shutil.copytree(sample, tmp_path / "sample")
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def finished(sample, tmp_path_factory):
    """A chain that ran to the end once."""
    root = tmp_path_factory.mktemp("finished")
    cfg = _project(root, sample)
    result = run_chain(cfg, progress=False)
    return cfg, result


def test_chain_runs_every_stage_into_one_folder(finished):
    cfg, result = finished
    out = cfg.parent / "out"
    assert [(s.name, s.action) for s in result.stages] == [
        ("preprocess", "ran"), ("train", "ran"), ("evaluate", "ran"), ("preview", "ran")]
    assert (out / "config.toml").read_bytes() == cfg.read_bytes()
    for rel in ("shards/manifest.json", "run/best.pt", "run/last.pt", "run/curves.png", "run/result.json",
                "eval-val/metrics.json", "eval-test/confusion.png", "preview.png"):
        assert (out / rel).is_file(), rel
    assert set(result.metrics) == {"val", "test"}
    report = (out / "report.md").read_text()
    assert "accuracy" in report and "two-branch" in report and "| happy |" in report
    # every picture the report shows exists, relative to the report
    for line in report.splitlines():
        if line.startswith("!["):
            assert (out / line.split("](")[1].rstrip(")")).is_file(), line
    m = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])


def test_chain_skips_finished_stages(finished):
    cfg, first = finished
    again = run_chain(cfg, progress=False)
    assert [s.action for s in again.stages] == ["skipped"] * 4
    assert again.metrics["test"]["accuracy"] == first.metrics["test"]["accuracy"]
    assert (cfg.parent / "out" / "report.md").is_file()


def test_chain_resumes_interrupted_training_with_the_same_result(finished, sample, tmp_path, monkeypatch):
    import importlib

    train_module = importlib.import_module("training.train")  # the module; `training.train` is the function
    cfg = _project(tmp_path, sample)
    real = train_module.write_log

    def stop_after_first_epoch(*a, **kw):
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint was saved

    monkeypatch.setattr(train_module, "write_log", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_chain(cfg, progress=False)
    assert (tmp_path / "out" / "run" / "last.pt").is_file()
    assert not (tmp_path / "out" / "run" / "result.json").exists()
    monkeypatch.setattr(train_module, "write_log", real)
    result = run_chain(cfg, progress=False)
    assert [(s.name, s.action) for s in result.stages][:2] == [("preprocess", "skipped"), ("train", "resumed")]
    resumed = torch.load(tmp_path / "out" / "run" / "last.pt", weights_only=True)
    whole = torch.load(finished[0].parent / "out" / "run" / "last.pt", weights_only=True)
    assert resumed["epoch"] == whole["epoch"] == 2
    for k, v in whole["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_changed_config_is_refused_unless_overwrite(sample, tmp_path):
    cfg = _project(tmp_path, sample)
    run_chain(cfg, progress=False)
    cfg.write_text(CONFIG.replace("epochs = 2", "epochs = 1"))
    with pytest.raises(OutputError, match=r"train.epochs: 2 -> 1.*--overwrite"):
        run_chain(cfg, progress=False)
    result = run_chain(cfg, overwrite=True, progress=False)
    assert [s.action for s in result.stages] == ["skipped", "ran", "ran", "skipped"]
    assert json.loads((tmp_path / "out" / "run" / "result.json").read_text())["epochs_done"] == 1
    # A damaged shard is found, and every stage after it runs again.
    shard = sorted((tmp_path / "out" / "shards" / "shards").glob("train-*.h5"))[0]
    damage_block_data(shard)
    result = run_chain(cfg, progress=False)
    assert [s.action for s in result.stages] == ["ran"] * 4
    assert verify(tmp_path / "out" / "shards").whole  # rebuilt


def test_out_folder_with_other_content_is_refused(sample, tmp_path):
    cfg = _project(tmp_path, sample)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        run_chain(cfg, out_dir=tmp_path / "busy", progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("text, message", [
    ('[data]\nsource = "s"\nfce = "x"\n', r"unknown key data\.fce; allowed in \[data\]: source, format"),
    ('[data]\nsource = "s"\nface = "sideways"\n', r"data\.face must be one of 'auto', 'detect', 'aligned'"),
    ('[data]\nsource = "s"\n[train]\nepochs = "30"\n',
     r"train\.epochs must be an integer \(1 to 100000\), got '30' \(a string\)"),
    ('[data]\nsource = "s"\n[train]\nmodel = "resnet"\n', r"train\.model must be one of .*'two-branch'"),
    ('[data]\nsource = "s"\n[trian]\nepochs = 3\n', r"unknown table or key 'trian'.*\[train\]"),
    ('[data]\nsource = "s"\neyes_size = "32by96"\n', r"data\.eyes_size must be a size HEIGHTxWIDTH such as"),
    ('[data]\nsource = "s"\n[train]\nlr = -1\n', r"train\.lr must be a number \(1e-12 to 10\), got -1"),
    ('[data]\nsource = "s"\n[train]\nlr = nan\n', r"train\.lr must be a number .*got nan"),
    ('[data]\nsource = "s"\nmax_megapixels = inf\n', r"data\.max_megapixels must be a number .*got inf"),
    ('[data]\nsource = "s"\njobs = 0\n', r"data\.jobs must be -1 \(all cores\) or a positive number"),
    ('[data]\nsource = "s"\n[train]\nlabels = ["happy"]\n', r"labels must name at least 2 classes"),
    ('[data]\nsource = "s"\nlandmark_model = "x.dat"\n', r"unknown key data\.landmark_model"),
    ('[data]\nsource = "s"\n[train]\naugment = 1\n', r"train\.augment must be true or false, got 1"),
    ('[data]\nsource = "s"\n[evaluate]\nsplits = ["dev"]\n', r"evaluate\.splits: unknown value 'dev'; allowed: train, val, test"),
    ('[train]\nepochs = 3\n', r"data\.source is required"),
    ('[data\nsource = "s"\n', r"not valid TOML"),
])
def test_config_errors_name_the_key_and_the_allowed_values(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(path)


def test_template_is_a_valid_config(tmp_path):
    text = template()
    tomllib.loads(text)
    (tmp_path / "t.toml").write_text(text)
    cfg = load_config(tmp_path / "t.toml")
    assert cfg["train"]["model"] == "two-branch" and cfg["data"]["eyes_size"] == [16, 48]
    assert cfg["data"]["source"] == str(tmp_path / "path" / "to" / "fer2013")


def test_model_paths_are_relative_to_the_config_and_names_stay_names(tmp_path):
    (tmp_path / "conf" / "teacher-run").mkdir(parents=True)
    path = tmp_path / "conf" / "c.toml"
    path.write_text('[data]\nsource = "s"\n[train]\ninit = "../start/best.pt"\n'
                    'teachers = ["fer2013", "teacher-run", "runs/t2"]\n')
    train = load_config(path)["train"]
    assert train["init"] == str(tmp_path / "start" / "best.pt")
    assert train["teachers"] == ["fer2013", str(tmp_path / "conf" / "teacher-run"),
                                 str(tmp_path / "conf" / "runs" / "t2")]


def test_cli_run(finished, tmp_path):
    cfg, _ = finished
    runner = CliRunner()
    r = runner.invoke(main, ["run", str(cfg), "-q"])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "test: accuracy" in r.output and "report.md" in r.output
    r = runner.invoke(main, ["run", "--template"])
    assert r.exit_code == 0 and "[train]" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nsource = "x"\nface = "sideways"\n')
    r = runner.invoke(main, ["run", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "data.face must be one of" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["run"])
    assert r.exit_code == 2 and "CONFIG" in r.output
    r = runner.invoke(main, ["run", "-h"])
    assert r.exit_code == 0 and "Example" in r.output


# ------------------------------------------------------------------------------------------------
# evaluate on shards cut differently from the checkpoint's


def test_evaluate_refuses_shards_cut_differently(finished, tmp_path):
    from prepro.blocks import BlockConfig
    from prepro.config import PreprocessConfig, PreprocessRun
    from prepro.pipeline import run_preprocess
    from training.evaluate import evaluate

    cfg, _ = finished
    out = cfg.parent / "out"
    other = tmp_path / "wide"
    run_preprocess(str(cfg.parent / "sample"), str(other),
                   PreprocessConfig(blocks=BlockConfig(eyes_margin=0.5), val_frac=0.25, test_frac=0.25),
                   PreprocessRun(jobs=1), progress=False)
    with pytest.raises(MismatchError, match=r"--eyes-margin 0\.2 in training, 0\.5 here"):
        evaluate(out / "run", other, split="test", out_dir=tmp_path / "ev")
    m = evaluate(out / "run", other, split="test", out_dir=tmp_path / "ev", allow_preprocessing_mismatch=True)
    assert m["preprocessing_differences"] and m["n_samples"] > 0
    r = CliRunner().invoke(main, ["evaluate", str(out / "run"), str(other), "--out", str(tmp_path / "ev2")])
    assert r.exit_code == 1 and "--allow-mismatch" in r.output and "Traceback" not in r.output


def test_committed_configs_are_valid():
    """benchmarks/ holds `faceblocks run` configs and bench_train.py sweep files ([defaults] and
    [[run]] tables of TrainConfig fields): every one must load, and every run's settings be valid."""
    from architectures import create_model
    from training.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    configs = sorted((root / "benchmarks").glob("*.toml"))
    assert configs
    for path in configs:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        if "run" in raw and isinstance(raw["run"], list):  # a sweep file
            names = [r["name"] for r in raw["run"]]
            assert names and len(set(names)) == len(names), path
            for r in raw["run"]:
                run = {**raw.get("defaults", {}), **r}
                assert run["shards"], path
                cfg = TrainConfig.from_dict({k: v for k, v in run.items() if k not in ("name", "shards")},
                                            where=f"{path.name}: {run['name']}: ")
                create_model(cfg.model, 7, **cfg.model_kwargs)  # the network takes these arguments
            continue
        cfg = load_config(path)
        assert cfg["data"]["source"] and cfg["run"]["out"]
