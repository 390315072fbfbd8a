"""The benchmark scripts that BENCHMARKS.md quotes still run (tiny versions, on synthetic shards)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shardfakes import make_fake_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_full_length_script_trains_the_four_networks_and_writes_the_table(tmp_path):
    shards = make_fake_shards(tmp_path / "shards", face_size=(48, 48))
    env = {**os.environ, "PYTHON": sys.executable, "SHARDS": str(shards), "OUT": str(tmp_path / "out"),
           "EPOCHS": "1", "EXTRA": 'model_kwargs={"widths":[8,16,32]} batch_size=16 device="cpu"'}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "full_length.sh")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "out" / "table.md").read_text()
    for net in ("two-branch", "two-branch-face", "two-branch-concat", "face-cnn"):
        assert f"| full-{net} | `{net}` |" in table
        report = json.loads((tmp_path / "out" / f"full-{net}" / "publictest.json").read_text())
        assert report["epochs_done"] == 1 and report["config"]["batch_size"] == 16
    assert (tmp_path / "out" / "device.txt").read_text().startswith("cpu")


@pytest.mark.slow
def test_the_student_script_trains_three_teachers_their_student_then_its_final_fit(tmp_path):
    shards = make_fake_shards(tmp_path / "shards", face_size=(48, 48))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SHARDS": str(shards), "OUT": str(out),
           "EXTRA": 'epochs=1 model_kwargs={"widths":[8,16],"feat_dim":16} batch_size=16 device="cpu"'}
    script = ["bash", str(ROOT / "benchmarks" / "fer2013-student.sh")]
    r = subprocess.run(script, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    teachers = ["full-two-branch-100ep", "full-two-branch-100ep-s1", "mixup-two-branch-face-50ep-s1"]
    students = ["kd3-two-branch-face-100ep-s1", "kd3-two-branch-face-100ep-s1-all"]
    for name in teachers + students:
        assert json.loads((out / name / "publictest.json").read_text())["epochs_done"] == 1, name
    student, final_fit = (json.loads((out / name / "publictest.json").read_text())["config"] for name in students)
    assert student["teachers"] == [str(out / t) for t in teachers] and student["seed"] == 1
    assert {k: v for k, v in final_fit.items() if k != "val_split"} == {k: v for k, v in student.items()
                                                                       if k != "val_split"}
    assert final_fit["val_split"] == "none" and student["val_split"] != "none"
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]  # a finished recipe is kept, not trained again

def test_sweep_overrides_are_json_and_apply_to_every_run(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    runs = bench_train.load_sweep(ROOT / "benchmarks" / "sweep-full-length.toml", {"epochs": 2})
    assert len(runs) == 4 and {r["epochs"] for r in runs} == {2}
    assert all(Path(r["shards"]).is_absolute() for r in runs)
    assert bench_train._setting('device="cpu"') == ("device", "cpu")
    with pytest.raises(Exception, match="must be JSON"):
        bench_train._setting("device=cpu")
    distill = bench_train.load_sweep(ROOT / "benchmarks" / "sweep-distill.toml")
    names = {r["name"] for r in distill}
    student = next(r for r in distill if r.get("teachers"))
    mapped = bench_train.teachers_in(student, tmp_path, names)["teachers"]
    assert mapped and all(t == str(tmp_path / name) for t, name in zip(mapped, student["teachers"]))
    assert bench_train.teachers_in({"teachers": ["fer2013"]}, tmp_path, names)["teachers"] == ["fer2013"]


@pytest.mark.parametrize("sweep", sorted((ROOT / "benchmarks").glob("sweep-*.toml")), ids=lambda p: p.name)
def test_every_sweep_file_gives_valid_training_settings(sweep: Path) -> None:
    """A sweep file BENCHMARKS.md quotes holds only settings `train` accepts, with valid values."""
    from training.config import TrainConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    runs = bench_train.load_sweep(sweep)
    assert runs
    for run in runs:
        TrainConfig.from_dict({k: v for k, v in run.items() if k not in ("name", "shards")})


def _tiny_runs(tmp_path: Path, seeds_and_holdouts) -> tuple[Path, list[Path]]:
    from training.config import TrainConfig
    from training.train import train

    shards = make_fake_shards(tmp_path / "shards")
    runs = []
    for seed, holdout_seed in seeds_and_holdouts:
        run = tmp_path / f"s{seed}-h{holdout_seed}"
        train(shards, run, TrainConfig(epochs=1, batch_size=16, progress=False, seed=seed, holdout_seed=holdout_seed,
                                       model_kwargs={"widths": [8, 16, 32], "feat_dim": 32}), log=None)
        runs.append(run)
    return shards, runs


def test_score_models_scores_each_model_and_their_mean_on_one_holdout(tmp_path):
    shards, runs = _tiny_runs(tmp_path, [(0, 0), (1, 0), (2, None), (3, 0)])
    script = str(ROOT / "benchmarks" / "score_models.py")
    r = subprocess.run([sys.executable, script, str(runs[0]), str(runs[1]), str(runs[3]), "--shards", str(shards),
                        "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(f"| {tmp_path}") or ln.startswith("| mean of")]
    # each model, then every ensemble: the three pairs and all three
    assert len(rows) == 7 and all(ln.count("%") == 8 for ln in rows)
    assert [ln.count(" + ") for ln in rows[3:]] == [1, 1, 1, 2]
    bad = subprocess.run([sys.executable, script, str(runs[0]), str(runs[2]), "--shards", str(shards)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "do not share one holdout" in bad.stderr
    tta = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "choose_tta.py"), str(runs[0]), str(shards)],
                         capture_output=True, text=True, timeout=600)
    assert tta.returncode == 0 and "(chosen)" in tta.stdout, tta.stderr[-2000:]
    # a final fit (val_split none) trained on the holdout's faces: it has no holdout figure to give
    from training.config import TrainConfig
    from training.train import train

    train(shards, tmp_path / "all", TrainConfig(epochs=1, batch_size=16, progress=False, val_split="none",
                                                model_kwargs={"widths": [8, 16, 32], "feat_dim": 32}), log=None)
    none = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "choose_tta.py"), str(tmp_path / "all"),
                           str(shards)], capture_output=True, text=True, timeout=600)
    assert none.returncode != 0 and "val_split none has no holdout of its own" in none.stderr, none.stderr[-2000:]


def test_a_kept_run_card_names_the_options_that_changed_what_it_learnt():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ship_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert ship_model._options({"mixup": 0.0, "ema_decay": 0.0, "teachers": None}) == ""
    text = ship_model._options({"mixup": 0.2, "erase": 0.5, "ema_decay": 0.999, "teachers": ["fer2013", "runs/a"],
                                "distill_weight": 0.5, "distill_temperature": 2.0})
    assert text == (", mixup 0.2, random erasing 0.5, weight average (EMA) 0.999, distilled from fer2013, runs/a (weight 0.5, "
                    "temperature 2.0)")


def test_an_ensemble_card_is_made_from_its_members_cards(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ship_ensemble
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    kept = [str(ROOT / "benchmarks" / "teachers" / f"{name}.pt") for name in ("full-two-branch-100ep",
                                                                             "mixup-two-branch-face-50ep-s1")]
    card = ship_ensemble.ensemble_card(kept)
    assert card["title"].startswith("ensemble of 2 networks on FER2013 (two-branch, two-branch-face;")
    assert [m["model"] for m in card["members"]] == kept
    assert "full-two-branch-100ep: two-branch, 100 epochs" in card["recipe"]
    assert "mixup-two-branch-face-50ep-s1: two-branch-face, 50 epochs" in card["recipe"]
    assert card["training"].count(" minutes on ") == 2 and "research use only" in card["terms"].lower()
    shards, runs = _tiny_runs(tmp_path, [(0, 0)])
    with pytest.raises(SystemExit, match="has no model card"):
        ship_ensemble.ensemble_card([kept[0], str(runs[0])])


def test_a_final_fit_is_swept_carded_and_viewed_by_the_run_that_chose_its_settings(tmp_path):
    """A final fit (val_split none) has no holdout figure: bench_train records none, ship_model
    states its twin's (the same settings with the holdout), and choose_tta takes the views there."""
    shards = make_fake_shards(tmp_path / "shards")
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'[defaults]\nshards = "{shards}"\nprogress = false\nepochs = 1\nbatch_size = 16\n'
                    'model_kwargs = {widths = [8, 16, 32], feat_dim = 32}\n'
                    '[[run]]\nname = "held"\n[[run]]\nname = "all"\nval_split = "none"\n'
                    '[[run]]\nname = "other"\nval_split = "none"\nseed = 5\n')
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "sweep", str(spec),
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "all" / "publictest.json").read_text())
    assert report["holdout_macro_f1"] is None and report["holdout_accuracy_flip"] is None
    assert report["publictest_accuracy"] > 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ship_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="name the run that chose its settings"):
        ship_model.card_for(out / "all", "a test", "recipe.sh")
    with pytest.raises(SystemExit, match="differ in seed"):
        ship_model.card_for(out / "other", "a test", "recipe.sh", holdout_run=out / "held")
    card = ship_model.card_for(out / "all", "a test", "recipe.sh", holdout_run=out / "held")
    assert "all trained on (a final fit)" in card["data"] and "by held" in card["data"]
    assert "the last kept; held's best holdout epoch 1" in card["recipe"]
    views = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "choose_tta.py"), str(out / "all"),
                            str(shards), "--views-of", str(out / "held")], capture_output=True, text=True, timeout=600)
    assert views.returncode == 0 and "(chosen)" in views.stdout and "holdout: " in views.stdout, views.stderr[-2000:]


def test_a_final_fit_may_name_its_twins_teachers_by_other_paths_but_not_other_teachers():
    """The shipped final fit named a teacher by its kept copy where its twin named the shipped
    model of that day: the same bytes. The teachers' recorded sha256 decide, never their paths."""
    from dataclasses import asdict

    from training.config import TrainConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from score_models import check_final_fit_of
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def ckpt(val_split, teachers, shas):
        config = asdict(TrainConfig(val_split=val_split, teachers=teachers))
        return {"config": config, "teachers": [{"model": t, "sha256": h} for t, h in zip(teachers, shas)]}

    twin = ckpt("holdout", ["fer2013", "b.pt"], ["aa", "bb"])
    check_final_fit_of(ckpt("none", ["kept/a.pt", "b.pt"], ["aa", "bb"]), twin)
    with pytest.raises(SystemExit, match="differ in teachers"):
        check_final_fit_of(ckpt("none", ["kept/a.pt", "b.pt"], ["cc", "bb"]), twin)
    with pytest.raises(SystemExit, match="differ in teachers"):
        check_final_fit_of(ckpt("none", ["kept/a.pt", "b.pt"], [None, None]), ckpt("holdout", ["fer2013", "b.pt"],
                                                                                [None, None]))
