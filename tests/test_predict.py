"""predict: the checkpoint's own preprocessing on new images and video frames; bad images reported,
not fatal; CSV and annotation outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import InputError
from prepro.pipeline import run_preprocess
from prepro.synthetic import make_sample
from training.config import TrainConfig
from inference.predict import PredictOptions, predict
from training.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    make_sample(root / "sample", per_class=4, expressions=("happy", "sad", "surprise"))
    run_preprocess(str(root / "sample"), str(root / "shards"), PreprocessConfig(val_frac=0.25, test_frac=0.0),
                   PreprocessRun(jobs=1), progress=False)
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False,
                      model_kwargs={"widths": [4, 8], "feat_dim": 16})
    train(str(root / "shards"), str(root / "run"), cfg, log=None)
    return root


def test_predict_images_folder_and_bad_inputs(trained, tmp_path):
    (tmp_path / "in").mkdir()
    good = sorted((trained / "sample" / "happy").glob("*.png"))[:2]
    for p in good:
        (tmp_path / "in" / p.name).write_bytes(p.read_bytes())
    Image.fromarray(np.full((480, 640), 128, np.uint8)).save(tmp_path / "in" / "blank.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    results = list(predict(trained / "run", [str(tmp_path / "in")], PredictOptions(annotate=str(tmp_path / "ann"))))
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert len(results) == 4
    for p in good:
        r = by_name[p.name]
        assert r.error is None and len(r.faces) == 1
        f = r.faces[0]
        assert f.label in ("happy", "sad", "surprise")
        assert abs(sum(f.probabilities.values()) - 1) < 1e-3
        assert abs(sum(f.region_weights.values()) - 1) < 1e-3
        assert r.annotated and (tmp_path / "ann").resolve() in Path(r.annotated).resolve().parents
    assert by_name["blank.png"].error.startswith("no face found") and not by_name["blank.png"].faces
    assert any(w in by_name["broken.jpg"].error for w in ("truncated", "not an image", "corrupt"))
    # Every decoded image gets its annotated copy (one without a face too); an unreadable one none.
    assert by_name["blank.png"].annotated and by_name["broken.jpg"].annotated is None
    assert len(list((tmp_path / "ann").iterdir())) == 3


def test_predict_two_faces_in_one_photo(trained):
    a = np.array(Image.open(sorted((trained / "sample" / "sad").glob("*.png"))[0]))
    b = np.array(Image.open(sorted((trained / "sample" / "surprise").glob("*.png"))[0]))
    photo = np.hstack([a, np.full((a.shape[0], 60), 90, np.uint8), b])
    path = trained / "two.png"
    Image.fromarray(photo).save(path)
    [r] = predict(trained / "run", [str(path)], PredictOptions(overrides={"face": "detect"}))
    assert r.error is None and len(r.faces) == 2
    assert all(f.box_method == "hog" for f in r.faces)
    area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in r.faces]
    assert area[0] >= area[1]  # largest first
    assert {f.box[0] < a.shape[1] for f in r.faces} == {True, False}  # one face in each half


def test_predict_video_frames_and_csv(trained, tmp_path):
    import csv

    import cv2

    from inference.tables import prediction_csv

    frames = [np.array(Image.open(p)) for p in sorted((trained / "sample" / "happy").glob("*.png"))[:3]]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[::-1], False)
    assert writer.isOpened()
    for f in frames + frames:
        writer.write(f)
    writer.release()
    results = list(predict(trained / "run", [str(video)], PredictOptions(every=2)))
    assert [r.frame for r in results] == [0, 2, 4] and [r.time for r in results] == [0.0, 0.2, 0.4]
    assert all(r.path == str(video) for r in results) and sum(len(r.faces) for r in results) >= 2
    names = list(results[0].faces[0].probabilities) if results[0].faces else ["happy"]
    with prediction_csv(str(tmp_path / "p.csv"), names, ["eyes", "mouth"]) as sink:
        for r in results:
            sink(r)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(max(len(r.faces), 1) for r in results) and rows[0]["frame"] == "0"
    face_rows = [r for r in rows if r["face"] != "0"]
    assert face_rows and all(abs(sum(float(r[f"p_{c}"]) for c in names) - 1) < 1e-2 for r in face_rows)
    assert all(r["w_eyes"] and r["w_mouth"] for r in face_rows)


def test_classifier_loads_what_the_shards_recorded(trained):
    from inference.classifier import Classifier

    c = Classifier.load(trained / "run", device="cpu")
    assert c.class_names == ["happy", "sad", "surprise"] and c.blocks.eyes_size == (16, 48)
    settings = c.cut_settings({"face": "detect", "min_face": 20})
    assert settings.face_mode == "detect" and settings.detector.min_face == 20
    assert settings.blocks == c.blocks
    with pytest.raises(InputError, match="min_face"):
        c.cut_settings({"min_face": 1})
    with pytest.raises(InputError, match="no inputs"):
        list(predict(trained / "run", []))


def test_predict_cli(trained, tmp_path):
    img = sorted((trained / "sample" / "happy").glob("*.png"))[0]
    runner = CliRunner()
    r = runner.invoke(main, ["predict", str(trained / "run"), str(img), "--json", "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output.splitlines()[0])
    assert rec["faces"] and rec["faces"][0]["label"]
    r = runner.invoke(main, ["predict", str(trained / "run"), str(img)])
    assert r.exit_code == 0 and "1 image or frame, 1 face, 0 without a prediction" in r.output, r.output
    # The progress bar (standard error) is cleared before each prediction's lines: a terminal
    # shows them from the start of a line, not after the bar.
    shown = _as_a_terminal_shows(r.output)
    assert any(line.startswith(f"{img} face 1 [") for line in shown), shown
    r = runner.invoke(main, ["predict", str(trained / "run"), str(tmp_path / "nothing-*.jpg")])
    assert r.exit_code == 1 and "no such file" in r.output


def _as_a_terminal_shows(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: a carriage return goes back to the line's start,
    and what follows overwrites what was there."""
    shown = []
    for line in text.split("\n"):
        cells: list[str] = []
        for part in line.split("\r"):
            cells[:len(part)] = part
        shown.append("".join(cells).rstrip())
    return shown


def test_cli_min_quality_default_is_the_library_default():
    """The flag's default is written in cli.py (importing inference.predict there would load numpy
    for every command): it must stay the library's."""
    from cli import main
    from inference.predictions import PredictOptions

    (opt,) = [p for p in main.commands["predict"].params if p.name == "min_quality"]
    assert opt.default == PredictOptions.min_quality
