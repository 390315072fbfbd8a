"""predict: the checkpoint's own preprocessing on new images; bad images reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from prepro.pipeline import PreprocessConfig, run_preprocess
from prepro.synthetic import make_sample
from training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    make_sample(root / "sample", per_class=4, expressions=("happy", "sad", "surprise"))
    run_preprocess(str(root / "sample"), str(root / "shards"), PreprocessConfig(val_frac=0.25, test_frac=0.0),
                   jobs=1, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False,
                      model_kwargs={"widths": [4, 8], "feat_dim": 16})
    train(str(root / "shards"), str(root / "run"), cfg, log=None)
    return root


def test_predict_images_folder_and_bad_inputs(trained, tmp_path):
    from training.predict import predict

    (tmp_path / "in").mkdir()
    good = sorted((trained / "sample" / "happy").glob("*.png"))[:2]
    for p in good:
        (tmp_path / "in" / p.name).write_bytes(p.read_bytes())
    Image.fromarray(np.full((480, 640), 128, np.uint8)).save(tmp_path / "in" / "blank.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    results = predict(trained / "run", [str(tmp_path / "in")], annotate_dir=tmp_path / "ann")
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
    assert by_name["blank.png"].error == "no face found"
    assert any(w in by_name["broken.jpg"].error for w in ("truncated", "not an image", "corrupt"))
    assert len(list((tmp_path / "ann").iterdir())) == 2


def test_predict_two_faces_in_one_photo(trained):
    from training.predict import predict

    a = np.array(Image.open(sorted((trained / "sample" / "sad").glob("*.png"))[0]))
    b = np.array(Image.open(sorted((trained / "sample" / "surprise").glob("*.png"))[0]))
    photo = np.hstack([a, np.full((a.shape[0], 60), 90, np.uint8), b])
    path = trained / "two.png"
    Image.fromarray(photo).save(path)
    [r] = predict(trained / "run", [str(path)], face_mode="detect")
    assert r.error is None and len(r.faces) == 2


def test_predict_cli(trained, tmp_path):
    img = sorted((trained / "sample" / "happy").glob("*.png"))[0]
    runner = CliRunner()
    r = runner.invoke(main, ["predict", str(trained / "run"), str(img), "--json", "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output.splitlines()[0])
    assert rec["faces"] and rec["faces"][0]["label"]
    r = runner.invoke(main, ["predict", str(trained / "run"), str(img)])
    assert r.exit_code == 0 and "1 images, 1 faces" in r.output
    r = runner.invoke(main, ["predict", str(trained / "run"), str(tmp_path / "nothing-*.jpg")])
    assert r.exit_code == 1 and "no such file" in r.output
