"""Training, checkpoints and evaluation on tiny synthetic shard folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from shardfakes import make_fake_shards
from tinyruns import TINY, tiny_config
from two_processes import torchrun_train

from prepro.errors import DataError, DivergedError, EmptySplitError, InputError, MismatchError, OutputError
from prepro.shards import Manifest, ShardReader
from training.config import TrainConfig
from training.evaluate import evaluate, format_metrics_table
from training.train import train
from training.checkpoint import load_checkpoint
from training.data import SplitSamples, augment, holdout_rows
from training.errors import CheckpointError


def tiny_cfg(**kw) -> TrainConfig:
    return tiny_config(**{"epochs": 3, "lr": 3e-3, **kw})


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
    with pytest.raises(InputError, match="lr"):
        train(shards, tmp_path / "r", tiny_cfg(epochs=2, lr=1e-2), resume=True, log=None)
    with pytest.raises(OutputError, match="already holds a run"):
        train(shards, tmp_path / "r", tiny_cfg(epochs=1), log=None)
    with pytest.raises(InputError, match="no last.pt"):
        train(shards, tmp_path / "nothing", resume=True, log=None)
    # Run-control settings may change on resume, the others may not.
    stored = TrainConfig.from_dict(load_checkpoint(tmp_path / "r" / "last.pt")["config"])
    assert stored.resumed_with({"epochs": 2, "device": "cpu"}).epochs == 2
    with pytest.raises(InputError, match="cannot change lr"):
        stored.resumed_with({"lr": 1e-2})


def test_label_subset_and_lazy_workers(shards, tmp_path):
    # Lazy HDF5 reads in 2 DataLoader workers, two of three classes re-indexed in order.
    r = train(shards, tmp_path / "sub", tiny_cfg(epochs=1, labels=["surprise", "happy"], cache=False,
                                                num_workers=2, balanced_sampler=True, class_weighting="inverse"),
              log=None)
    ck = load_checkpoint(Path(r.run_dir) / "best.pt")
    assert ck["class_names"] == ["surprise", "happy"] and ck["num_classes"] == 2
    ds = SplitSamples(str(shards), "train", class_names=["surprise", "happy"], regions=("eyes",))
    assert len(ds) == 48 and ds.n_excluded == 24 and set(ds.targets.tolist()) == {0, 1}
    assert ds.excluded_by_label == {"sad": 24}


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


def test_erase_sets_one_rectangle_of_mid_grey_per_chosen_block():
    from training.data import NORM_MEAN, erase

    regions = ("eyes", "mouth")
    x = {"eyes": torch.rand(64, 1, 16, 48) * 0.4, "mouth": torch.rand(64, 1, 16, 32) * 0.4}  # never mid grey
    out = erase(x, regions, 1.0, torch.Generator().manual_seed(0))
    for r in regions:
        for before, after in zip(x[r], out[r]):
            grey = (after[0] == NORM_MEAN)
            rows, cols = grey.any(1).nonzero().flatten(), grey.any(0).nonzero().flatten()
            height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
            assert int(grey.sum()) == height * width  # one filled rectangle
            assert 1 <= height * width <= 0.3 * grey.numel()  # 2-25% of the block, give or take rounding
            assert torch.equal(after[0][~grey], before[0][~grey])  # nothing else touched
    where = {r: (out[r] == NORM_MEAN).float().flatten(1).argmax(1) for r in regions}
    assert not torch.equal(where["eyes"], where["mouth"])  # each block its own rectangle
    again = erase(x, regions, 1.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[r], again[r]) for r in regions)
    untouched = erase(x, regions, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(untouched[r], x[r]) for r in regions)
    some = erase(x, regions, 0.5, torch.Generator().manual_seed(0))
    assert 0 < sum(int((some["eyes"][i] == NORM_MEAN).any()) for i in range(64)) < 64


def test_holdout_is_stratified_seeded_and_disjoint():
    targets = np.repeat([0, 1, 2], [30, 10, 1])
    held = holdout_rows(targets, 0.1, seed=3)
    assert np.bincount(targets[held], minlength=3).tolist() == [3, 1, 0]  # a lone sample stays in training
    assert np.array_equal(held, holdout_rows(targets, 0.1, seed=3))
    assert not np.array_equal(held, holdout_rows(targets, 0.1, seed=4))
    assert len(np.unique(held)) == len(held)


def test_holdout_validation_and_mixup(shards, tmp_path):
    r = train(shards, tmp_path / "m", tiny_cfg(epochs=1, mixup=0.4, erase=0.5, holdout_frac=0.25), log=None)
    row = load_checkpoint(Path(r.run_dir) / "last.pt", for_resume=True)["history"][0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert "on 18 holdout samples" in _lines(shards, tmp_path / "m2", tiny_cfg(epochs=1, holdout_frac=0.25))


def test_no_validation_trains_on_every_sample_and_keeps_each_last_epoch(shards, tmp_path):
    # val_split none: the final fit once the epochs were chosen on a holdout (all 72 train samples,
    # best.pt = last.pt, no validation figure anywhere, and it resumes like any run).
    from training.run_folder import RunFolder
    from training.run_summary import train_report

    cfg = tiny_cfg(epochs=2, val_split="none")
    out: list[str] = []

    def stop_after_one(line: str) -> None:
        out.append(line)
        if line.startswith("epoch   1/"):
            raise KeyboardInterrupt  # as if stopped right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(shards, tmp_path / "all", cfg, log=stop_after_one)
    assert "on 72 train samples" in out[0] and "no validation: the last epoch is kept" in out[0]
    assert "val loss" not in out[1]
    r = train(shards, tmp_path / "all", resume=True, log=out.append)
    assert r.best_val_macro_f1 is None and r.best_epoch == r.epochs_done == 2 and "best val" not in out[2]
    a, b = _weights(tmp_path / "all" / "best.pt"), _weights(tmp_path / "all" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(shards, tmp_path / "whole", cfg, log=None)
    c = _weights(tmp_path / "whole" / "last.pt")
    assert all(torch.equal(a[k], c[k]) for k in a)  # resumed = uninterrupted
    header, *rows = (tmp_path / "all" / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].split(",")[header.split(",").index("val_macro_f1")] == ""
    assert RunFolder(tmp_path / "all").read_result()["best_val_macro_f1"] is None
    assert "no validation: the last epoch (2) is kept" in train_report(r, str(shards), str(tmp_path / "all"), "none")[0]
    with pytest.raises(InputError, match="patience needs a validation part"):
        tiny_cfg(val_split="none", patience=3)


def _lines(shards: Path, run: Path, cfg: TrainConfig) -> str:
    out: list[str] = []
    train(shards, run, cfg, log=out.append)
    return "\n".join(out)


def test_min_quality_leaves_out_doubtful_training_samples(tmp_path):
    low = make_fake_shards(tmp_path / "low", quality=0.3, per_class={"train": 8, "val": 2, "test": 2})
    with pytest.raises(EmptySplitError, match="quality >= 0.5"):
        train(low, tmp_path / "run", tiny_cfg(epochs=1, min_quality=0.5), log=None)
    r = train(low, tmp_path / "run2", tiny_cfg(epochs=1, min_quality=0.3), log=None)
    assert r.epochs_done == 1


# ------------------------------------------------------------------------------------------------
# errors with a clear message


def test_empty_split(tmp_path):
    s = make_fake_shards(tmp_path / "noval", per_class={"train": 8, "val": 0, "test": 4})
    with pytest.raises(EmptySplitError, match="val validation part"):
        train(s, tmp_path / "run", tiny_cfg(epochs=1, val_split="val"), log=None)
    with pytest.raises(EmptySplitError, match="split 'val'"):
        train(s, tmp_path / "run", tiny_cfg(epochs=1, train_split="val", val_split="test"), log=None)


def test_missing_and_damaged_shard(shards, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(shards, s)
    (s / "shards" / "train-00000.h5").unlink()
    with pytest.raises(DataError, match="train-00000.h5 .* missing"):
        train(s, tmp_path / "run", tiny_cfg(epochs=1), log=None)
    shutil.rmtree(s)
    shutil.copytree(shards, s)
    p = s / "shards" / "train-00001.h5"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataError, match="train-00001.h5 .* checksum mismatch"):
        train(s, tmp_path / "run2", tiny_cfg(epochs=1), log=None)
    # Without the checksum check the damage still is a DataError naming the shard, never wrong data.
    with pytest.raises(DataError, match="train-00001.h5 .* unreadable"):
        ShardReader(s, split="train", verify_files=False)


def test_nan_loss_stops_with_diverged_error(shards, tmp_path, monkeypatch):
    import training.epoch

    monkeypatch.setattr(training.epoch, "normalize", lambda b, regions: {r: b[r] * float("nan") for r in regions})
    with pytest.raises(DivergedError, match="lower lr"):
        train(shards, tmp_path / "run", tiny_cfg(epochs=1), log=None)
    assert not (tmp_path / "run" / "best.pt").exists()  # nothing non-finite is ever saved


def test_bad_config_values(shards, tmp_path):
    with pytest.raises(InputError, match="two-branch-face"):  # the allowed models are named
        tiny_cfg(model="nope")
    with pytest.raises(InputError, match="model_kwargs|no_such"):
        train(shards, tmp_path / "k", tiny_cfg(model_kwargs={"no_such": 1}), log=None)
    with pytest.raises(InputError, match="unknown label"):
        train(shards, tmp_path / "b", tiny_cfg(labels=["happy", "bored"]), log=None)
    with pytest.raises(InputError, match="fear have none"):
        train(shards, tmp_path / "c", tiny_cfg(labels=["happy", "fear"]), log=None)
    with pytest.raises(InputError, match="val_split must differ"):
        tiny_cfg(train_split="val", val_split="val")
    with pytest.raises(InputError, match="lr must be a number"):
        tiny_cfg(lr=float("nan"))  # a non-finite value is refused, never trained with
    with pytest.raises(InputError, match="unknown key train.epoch"):
        TrainConfig.from_dict({"epoch": 3}, where="train.")


def test_block_size_mismatch_on_resume_and_evaluate(trained, shards, tmp_path):
    other = make_fake_shards(tmp_path / "big", eyes_size=(20, 48))
    with pytest.raises(MismatchError, match="--eyes-size 16x48"):
        evaluate(trained, other, split="test", out_dir=tmp_path / "ev")
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with pytest.raises(MismatchError, match="eyes blocks of 20x48"):
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


def test_checkpoint_is_self_describing_and_checked(trained, shards, tmp_path):
    ck = load_checkpoint(trained / "last.pt", arch="two-branch", for_resume=True)
    assert ck["class_names"] == ["happy", "sad", "surprise"]
    assert ck["block_sizes"] == {"eyes": [16, 48], "mouth": [16, 32], "face": [32, 32]}
    assert ck["preprocessing"] == Manifest.load(shards).params and ck["faceblocks_version"]
    assert ck["preprocessing"]["blocks"]["eyes_size"] == [16, 48]
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
    # Fields of the wrong type or value are refused before anything uses them.
    for bad, field in (({"class_names": "happy"}, "class_names"), ({"epoch": -1}, "epoch"),
                       ({"block_sizes": {"eyes": [16, "48"], "mouth": [16, 32], "face": [32, 32]}}, "block_sizes"),
                       ({"arch": "nope"}, "arch")):
        torch.save({**ck, **bad}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=f"bad {field}"):
            load_checkpoint(tmp_path / "bad.pt")
    nan = {k: v.clone() for k, v in ck["model"].items()}
    first = next(k for k, v in nan.items() if v.is_floating_point())
    nan[first].view(-1)[0] = float("nan")
    torch.save({**ck, "model": nan}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "nan.pt")


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
    assert m["tta_flip"] is True and m["tta_shift"] is False
    shifted = evaluate(trained, shards, split="test", tta_flip=True, tta_shift=True, out_dir=tmp_path / "ev2")
    assert shifted["tta_shift"] is True and 0 <= shifted["accuracy"] <= 1
    assert "with flip+shift TTA" in format_metrics_table(shifted)
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
    with pytest.raises(MismatchError, match="none of which the model knows"):
        evaluate(trained, disjoint, split="test", out_dir=tmp_path / "ev2")


# ------------------------------------------------------------------------------------------------
# several processes


@pytest.mark.slow
def test_torchrun_two_processes_gloo(shards, tmp_path):
    run = tmp_path / "ddp"
    proc = torchrun_train([str(shards), str(run), "--epochs", "2", "--batch-size", "8", "--model-kwargs",
                           json.dumps(TINY), "--device", "cpu", "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    ck = load_checkpoint(run / "last.pt", for_resume=True)
    assert ck["epoch"] == 2
    # Two processes of 8 samples per step over the 66 training samples left beside the holdout
    # (2 of each class's 24): 4 full steps each per epoch (33 per process).
    assert ck["step"] == 2 * 4
    assert json.loads(proc.stdout.strip().splitlines()[-1])["epochs_done"] == 2


def test_time_budget_stops_after_validating(shards, tmp_path):
    r = train(shards, tmp_path / "t", tiny_cfg(epochs=50, max_minutes=1e-6), log=None)
    assert r.stop_reason == "time budget" and r.epochs_done == 1
    assert (tmp_path / "t" / "best.pt").is_file()
    assert "1,True" not in (tmp_path / "t" / "log.csv").read_text()
    assert (tmp_path / "t" / "log.csv").read_text().strip().endswith(",1")  # the epoch is marked partial


def test_resolve_checkpoint_and_shipped_models(trained, shards, tmp_path, monkeypatch):
    import training.zoo as zoo
    from training.model_names import resolve_checkpoint

    assert resolve_checkpoint(trained)[0] == trained / "best.pt"
    assert resolve_checkpoint(trained / "last.pt")[1]["epoch"] == 10
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        resolve_checkpoint(tmp_path / "runs" / "gone.pt")  # a missing path, not an unknown model name
    with pytest.raises(CheckpointError, match="holds no best.pt"):
        resolve_checkpoint(tmp_path)
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "models")
    with pytest.raises(InputError, match="no model ships with this install"):
        resolve_checkpoint("tiny")
    card = {"title": "a tiny test model", "terms": "none", "results": {"test": {"accuracy": 0.5, "macro_f1": 0.4}}}
    zoo.ship(trained / "best.pt", "tiny", card, models_dir=zoo.MODELS_DIR)
    assert zoo.shipped_names() == ["tiny"] and zoo.shipped_cards() == {"tiny": card}
    assert "tiny: a tiny test model" in zoo.format_card("tiny", card)
    path, ck = resolve_checkpoint("tiny")
    assert path == tmp_path / "models" / "tiny.pt" and "optimizer" not in ck
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    m = evaluate("tiny", shards, split="test", out_dir=tmp_path / "ev")
    assert m["checkpoint"] == str(path) and m["n_samples"] == 24
    with pytest.raises(InputError, match="the models shipped are: tiny"):
        resolve_checkpoint("huge")
