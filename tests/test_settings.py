"""prepro.settings: checks of every settings class, mappings with named keys, round trips, options."""

from __future__ import annotations

import math

import pytest

from prepro.blocks import BlockConfig
from prepro.config import PreprocessConfig, PreprocessRun
from prepro.detection import DetectorSettings
from prepro.errors import InputError
from prepro.settings import check_value, from_dict, from_mapping, options, to_dict
from training.config import TrainConfig

CLASSES = (PreprocessConfig, PreprocessRun, BlockConfig, DetectorSettings, TrainConfig)


@pytest.mark.parametrize("cls", CLASSES)
def test_defaults_round_trip(cls):
    obj = cls()
    assert from_dict(cls, to_dict(obj)) == obj
    assert {o.name for o in options(cls)} >= {k for k, v in to_dict(obj).items() if not isinstance(v, dict)}


def test_nested_settings_round_trip_and_flatten():
    cfg = PreprocessConfig(face="detect", blocks=BlockConfig(eyes_size=(24, 72), rotate=False),
                           detection=DetectorSettings(detector="hog+cnn", min_face=20))
    d = cfg.to_dict()
    assert d["blocks"]["eyes_size"] == [24, 72] and d["detection"]["min_face"] == 20
    assert "small_image_side" not in d["detection"]  # a fixed constant, not a setting
    assert PreprocessConfig.from_dict(d) == cfg
    flat = from_mapping(PreprocessConfig, {"face": "detect", "eyes_size": "24x72", "rotate": False,
                                           "detector": "hog+cnn", "min_face": 20})
    assert flat == cfg
    names = [o.name for o in options(PreprocessConfig)]
    assert {"eyes_size", "min_face", "detector", "shard_size"} <= set(names) and len(names) == len(set(names))


@pytest.mark.parametrize("cls, key", [
    (PreprocessConfig, "max_megapixels"), (PreprocessConfig, "val_frac"), (BlockConfig, "eyes_margin"),
    (DetectorSettings, "min_face_frac"), (TrainConfig, "lr"), (TrainConfig, "mixup"), (TrainConfig, "max_minutes"),
])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(cls, key, bad):
    with pytest.raises(InputError, match=f"{key} must be a number"):
        cls(**{key: bad})
    with pytest.raises(InputError, match=f"train.{key} must be a number"):
        from_mapping(cls, {key: bad}, where="train.")


def test_wrong_kinds_and_ranges_name_the_key_and_what_is_allowed():
    with pytest.raises(InputError, match=r"shard_size must be an integer \(1 to 1e\+06\), got 0"):
        PreprocessConfig(shard_size=0)
    with pytest.raises(InputError, match=r"shard_size must be an integer .*got 2\.5 \(a number\)"):
        PreprocessConfig(shard_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="limit must be an integer"):
        PreprocessConfig(limit=True)  # type: ignore[arg-type]  # a boolean is no number
    with pytest.raises(InputError, match="face must be one of 'auto', 'detect', 'aligned'"):
        PreprocessConfig(face="guess")
    with pytest.raises(InputError, match="detector must be one of 'hog', 'cnn', 'hog\\+cnn'"):
        DetectorSettings(detector="haar")
    with pytest.raises(InputError, match="jobs must be -1"):
        PreprocessRun(jobs=0)
    with pytest.raises(InputError, match="labels: unknown value|labels must be a list"):
        TrainConfig(labels="happy")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model_kwargs must hold plain JSON values"):
        TrainConfig(model_kwargs={"x": math.nan})
    assert PreprocessConfig(limit=None).limit is None and PreprocessConfig(max_megapixels=5).max_megapixels == 5.0


def test_unknown_keys_are_named_with_the_allowed_ones():
    with pytest.raises(InputError, match=r"unknown key data\.face_mode, data\.predictor; allowed: .*face"):
        from_mapping(PreprocessConfig, {"face_mode": "aligned", "predictor": "x.dat"}, where="data.")
    with pytest.raises(InputError, match="unknown key epoch"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(InputError, match="unknown key eyes; allowed: .*eyes_size"):
        PreprocessConfig.from_dict({"blocks": {"eyes": [32, 96]}})  # a stored config from elsewhere
    with pytest.raises(InputError, match="settings must be a table"):
        from_mapping(TrainConfig, ["epochs", 3])  # type: ignore[arg-type]


def test_check_value_converts_sizes_and_numbers():
    spec = next(o.spec for o in options(BlockConfig) if o.name == "eyes_size")
    assert check_value("eyes_size", spec, "32x96") == (32, 96) == check_value("eyes_size", spec, [32, 96])
    with pytest.raises(InputError, match="eyes_size"):
        check_value("eyes_size", spec, "32by96")
    lr = next(o.spec for o in options(TrainConfig) if o.name == "lr")
    assert check_value("lr", lr, 1) == 1.0 and isinstance(check_value("lr", lr, 1), float)


def test_resumed_with_changes_only_run_control_settings():
    cfg = TrainConfig(epochs=3)
    assert cfg.resumed_with({"epochs": 5, "patience": 2}).epochs == 5
    with pytest.raises(InputError, match="cannot change batch_size, lr"):
        cfg.resumed_with({"lr": 0.1, "batch_size": 8, "epochs": 4})


def test_public_preprocess_takes_option_names(tmp_path):
    import prepro
    from prepro.shards import Manifest
    from test_pipeline import make_source

    make_source(tmp_path / "src", bad=False)
    s = prepro.preprocess(str(tmp_path / "src"), str(tmp_path / "out"), jobs=1, progress=False, face="aligned",
                          eyes_size=(24, 72), shard_size=4)
    assert s.samples == 12 and Manifest.load(tmp_path / "out").block_sizes["eyes"] == [24, 72]
    with pytest.raises(InputError, match="unknown key face_mode"):
        prepro.preprocess(str(tmp_path / "src"), str(tmp_path / "out2"), face_mode="aligned")
