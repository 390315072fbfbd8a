"""Training engine, checkpoints and evaluation on tiny synthetic shard folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shardfakes import make_fake_shards

from prepro.shards import ShardError
from training import (BlockSizeMismatchError, CheckpointError, ConfigError, EmptySplitError, LabelMismatchError,
                      RunExistsError, TrainConfig, TrainingDivergedError, evaluate, format_metrics_table, train)
from training.checkpoint import load_checkpoint
from training.data import BlockDataset, augment

ROOT = Path(__file__).resolve().parents[1]
TINY = {"widths": [8, 16, 32], "feat_dim": 32}


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, model_kwargs=TINY, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_fake_shards(tmp_path_factory.mktemp("fake") / "shards", unlabelled=2)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> Path:
    """A run that learned the fixture (shared by the evaluation tests)."""
    run = tmp_path_factory.mktemp("runs") / "learned"
    train(shards, run, tiny_cfg(epochs=10), log=None)
    return run


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


# ------------------------------------------------------------------------------------------------
# learning, logs, repeatability


def test_training_learns_and_writes_run_folder(trained):
    rows = (trained / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss")
    assert len(rows) == 11
    hist = load_checkpoint(trained / "last.pt", for_resume=True)["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    best = max(h["val_acc"] for h in hist)
    assert best >= 0.8  # chance is 1/3 on three balanced classes
    for name in ("best.pt", "last.pt", "curves.png"):
        assert (trained / name).stat().st_size > 0
    assert not list(trained.glob("*.tmp"))


def test_resume_gives_the_same_weights(shards, tmp_path):
    cfg = tiny_cfg(epochs=4)
    train(shards, tmp_path / "whole", cfg, log=None)

    class Stop(Exception):
        pass

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Stop  # as if the process were killed right after epoch 2's checkpoint

    with pytest.raises(Stop):
        train(shards, tmp_path / "cut", cfg, log=stop_after_two)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    result = train(shards, tmp_path / "cut", resume=True, log=None)
    assert result.epochs_done == 4
    a, b = _weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "cut" / "log.csv").read_text() .count("\n") == 5


def test_resume_refuses_changed_settings_and_existing_run(shards, tmp_path):
    train(shards, tmp_path / "r", tiny_cfg(epochs=1), log=None)
    with pytest.raises(ConfigError, match="lr"):
        train(shards, tmp_path / "r", tiny_cfg(epochs=2, lr=1e-2), resume=True, log=None)
    with pytest.raises(RunExistsError):
        train(shards, tmp_path / "r", tiny_cfg(epochs=1), log=None)
    with pytest.raises(CheckpointError, match="no last.pt"):
        train(shards, tmp_path / "nothing", resume=True, log=None)


def test_label_subset_and_lazy_workers(shards, tmp_path):
    # Lazy HDF5 reads in 2 DataLoader workers, two of three classes re-indexed in order.
    r = train(shards, tmp_path / "sub", tiny_cfg(epochs=1, labels=["surprise", "happy"], cache=False,
                                                num_workers=2, balanced_sampler=True, class_weighting="inverse"),
              log=None)
    ck = load_checkpoint(Path(r.run_dir) / "best.pt")
    assert ck["class_names"] == ["surprise", "happy"] and ck["num_classes"] == 2
    ds = BlockDataset(shards, "train", class_names=["surprise", "happy"], regions=("eyes",))
    assert len(ds) == 48 and ds.n_excluded == 24 and set(ds.targets.tolist()) == {0, 1}


def test_augment_flips_every_block_together():
    from training.data import AugmentConfig

    x = {r: torch.rand(8, 1, 16, 24) for r in ("eyes", "mouth")}
    still = AugmentConfig(flip_p=1.0, max_shift=0, max_scale=0, max_rotate=0, brightness=0, contrast=0)
    out = augment(x, ("eyes", "mouth"), torch.Generator().manual_seed(0), still)
    for r in x:
        assert torch.allclose(out[r], x[r].flip(-1), atol=1e-5)
    a = augment(x, ("eyes", "mouth"), torch.Generator().manual_seed(1))
    b = augment(x, ("eyes", "mouth"), torch.Generator().manual_seed(1))
    assert all(torch.equal(a[r], b[r]) for r in x) and a["eyes"].min() >= 0 and a["eyes"].max() <= 1


# ------------------------------------------------------------------------------------------------
# errors with a clear message


def test_empty_split(tmp_path):
    s = make_fake_shards(tmp_path / "noval", per_class={"train": 8, "val": 0, "test": 4})
    with pytest.raises(EmptySplitError, match="'val'"):
        train(s, tmp_path / "run", tiny_cfg(epochs=1), log=None)


def test_missing_and_damaged_shard(shards, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(shards, s)
    (s / "shards" / "train-00000.h5").unlink()
    with pytest.raises(ShardError, match="missing"):
        train(s, tmp_path / "run", tiny_cfg(epochs=1), log=None)
    shutil.rmtree(s)
    shutil.copytree(shards, s)
    p = s / "shards" / "train-00001.h5"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ShardError, match="unreadable"):
        train(s, tmp_path / "run2", tiny_cfg(epochs=1), log=None)


def test_nan_loss_stops_with_diverged_error(shards, tmp_path, monkeypatch):
    import training.engine as engine

    monkeypatch.setattr(engine, "normalize", lambda b, regions: {r: b[r] * float("nan") for r in regions})
    with pytest.raises(TrainingDivergedError, match="lower lr"):
        train(shards, tmp_path / "run", tiny_cfg(epochs=1), log=None)


def test_bad_config_values(shards, tmp_path):
    with pytest.raises(ConfigError, match="valid models"):
        train(shards, tmp_path / "a", tiny_cfg(model="nope"), log=None)
    with pytest.raises(ConfigError, match="unknown label"):
        train(shards, tmp_path / "b", tiny_cfg(labels=["happy", "bored"]), log=None)
    with pytest.raises(ConfigError, match="no train samples"):
        train(shards, tmp_path / "c", tiny_cfg(labels=["happy", "fear"]), log=None)


def test_block_size_mismatch_on_resume_and_evaluate(trained, shards, tmp_path):
    other = make_fake_shards(tmp_path / "big", eyes_size=(20, 48))
    with pytest.raises(BlockSizeMismatchError, match="--eyes-size 16x48"):
        evaluate(trained, other, split="test", out_dir=tmp_path / "ev")
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with pytest.raises(BlockSizeMismatchError, match="eyes blocks of 20x48"):
        train(other, run, resume=True, log=None)


# ------------------------------------------------------------------------------------------------
# checkpoints


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused_and_nothing_runs(trained, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = torch.load(trained / "best.pt", weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({**good, "config": Evil()}, evil)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="pickled"):
        evaluate(evil, shards, out_dir=tmp_path / "ev")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evil, run / "last.pt")
    with pytest.raises(CheckpointError):
        train(shards, run, resume=True, log=None)
    assert not (tmp_path / "PWNED").exists()
    assert not (Path.cwd() / "PWNED").exists()


def test_checkpoint_is_self_describing_and_checked(trained, tmp_path):
    ck = load_checkpoint(trained / "last.pt", arch="two-branch", for_resume=True)
    assert ck["class_names"] == ["happy", "sad", "surprise"]
    assert ck["block_sizes"] == {"eyes": [16, 48], "mouth": [16, 32], "face": [32, 32]}
    assert ck["preprocessing"]["synthetic"] is True and ck["faceblocks_version"]
    assert ck["config"]["model_kwargs"] == TINY and isinstance(ck["rng"]["numpy"][1], list)
    with pytest.raises(CheckpointError, match="'two-branch' model, not 'face-cnn'"):
        load_checkpoint(trained / "last.pt", arch="face-cnn")
    partial = {k: v for k, v in ck.items() if k not in ("model", "optimizer")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks model"):
        load_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------------
# evaluation


def test_evaluate_writes_metrics(trained, shards, tmp_path):
    m = evaluate(trained, shards, split="test", tta_flip=True, out_dir=tmp_path / "ev")
    for name in ("metrics.json", "confusion.json", "confusion.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(m["accuracy"]) and m["n_samples"] == 24
    assert m["n_unlabelled"] == 2 and m["n_excluded"] == 0
    assert set(m["per_class"]) == {"happy", "sad", "surprise"}
    for w in m["region_weights_per_class"].values():
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-4)
    cm = json.loads((tmp_path / "ev" / "confusion.json").read_text())
    assert np.array(cm["matrix"]).sum() == 24
    assert "macro-F1" in format_metrics_table(m)
    # Default output folder: the run folder.
    evaluate(trained / "best.pt", shards, split="val")
    assert json.loads((trained / "metrics.json").read_text())["split"] == "val"


def test_evaluate_on_shards_with_another_label_set(trained, tmp_path):
    other = make_fake_shards(tmp_path / "other", labels=("contempt", "happy", "sad"),
                             per_class={"train": 2, "val": 2, "test": 5})
    m = evaluate(trained, other, split="test", out_dir=tmp_path / "ev")
    assert m["n_samples"] == 10 and m["n_excluded"] == 5 and m["excluded_by_label"] == {"contempt": 5}
    assert m["evaluated_classes"] == ["happy", "sad"]
    assert "excluded 5" in format_metrics_table(m)
    disjoint = make_fake_shards(tmp_path / "disjoint", labels=("fear", "anger"), label_names=["fear", "anger"])
    with pytest.raises(LabelMismatchError):
        evaluate(trained, disjoint, split="test", out_dir=tmp_path / "ev2")


# ------------------------------------------------------------------------------------------------
# several processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(shards, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "training.engine", str(shards), str(run), "--epochs", "2", "--batch-size", "8",
           "--model-kwargs", json.dumps(TINY), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish in 120 s on this machine")
    if proc.returncode != 0 and ("EADDRINUSE" in proc.stderr or "rendezvous" in proc.stderr.lower()):
        pytest.skip(f"torchrun could not start: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    ck = load_checkpoint(run / "last.pt", for_resume=True)
    assert ck["epoch"] == 2
    # Two processes of 8 samples per step over 72 samples: 4 full steps each per epoch (36 per process).
    assert ck["step"] == 2 * 4
    assert json.loads(proc.stdout.strip().splitlines()[-1])["epochs_done"] == 2


def test_time_budget_stops_after_validating(shards, tmp_path):
    r = train(shards, tmp_path / "t", tiny_cfg(epochs=50, max_minutes=1e-6), log=None)
    assert r.stop_reason == "time budget" and r.epochs_done == 1
    assert (tmp_path / "t" / "best.pt").is_file()
    assert "1,True" not in (tmp_path / "t" / "log.csv").read_text()
    assert (tmp_path / "t" / "log.csv").read_text().strip().endswith(",1")  # the epoch is marked partial
