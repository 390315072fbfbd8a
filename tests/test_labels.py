"""Canonical labels, their aliases, and the dataset descriptions in datasets/*.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from prepro.errors import InputError
from prepro.labels import CANONICAL_LABELS, UnknownLabelError, canonical_label, label_index
from prepro.specs import DatasetSpec, datasets_dir, list_specs, load_spec

REPO = Path(__file__).resolve().parents[1]


def test_canonical_order_is_fixed():
    # the index is stored in shards: this order must never change
    assert CANONICAL_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")
    assert label_index("neutral") == 6


@pytest.mark.parametrize("spelling, expected", [
    ("anger", "angry"), ("Angry", "angry"), ("AN", "angry"), ("disgusted", "disgust"), ("DI", "disgust"),
    ("Fearful", "fear"), ("afraid", "fear"), ("FE", "fear"), ("joy", "happy"), ("Happiness", "happy"),
    ("HA", "happy"), ("sadness", "sad"), ("SA", "sad"), ("Surprised", "surprise"), ("SU", "surprise"),
    ("NE", "neutral"), ("neutral", "neutral"), ("co", "contempt"), (" Sur-prise_ ", "surprise"),
])
def test_aliases(spelling, expected):
    assert canonical_label(spelling) == expected


def test_unknown_label_lists_allowed():
    with pytest.raises(UnknownLabelError) as e:
        canonical_label("confused")
    msg = str(e.value)
    assert "'confused'" in msg and "angry" in msg and "contempt" in msg and "joy" in msg
    assert isinstance(e.value, InputError)


def test_numeric_codes_are_not_global():
    with pytest.raises(UnknownLabelError):
        canonical_label("0")
    assert canonical_label("0", {"0": "angry", "6": "neutral"}) == "angry"
    assert canonical_label("6", {"0": "angry", "6": "neutral"}) == "neutral"
    with pytest.raises(UnknownLabelError, match="dataset spellings: 0"):
        canonical_label("7", {"0": "angry"})


def test_builtin_specs_load():
    assert {"fer2013", "fer2013-csv", "ferg", "ckplus", "jaffe"} <= set(list_specs())
    assert datasets_dir().resolve() == (REPO / "datasets").resolve()
    fer = load_spec("fer2013")
    assert fer.format == "folder" and fer.pre_cropped and fer.split_from_filename_prefix
    assert fer.expected_counts == {"train": 28709, "val": 3589, "test": 3589}
    assert fer.split_names == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    assert [fer.labels[str(i)] for i in range(7)] == list(CANONICAL_LABELS[:7])
    csv = load_spec("fer2013-csv")
    assert csv.format == "fer2013-csv" and csv.labels == fer.labels
    assert load_spec("ferg").labels["joy"] == "happy" and load_spec("ferg").pre_cropped
    ck = load_spec("ckplus")
    assert ck.subject_pattern and ck.labels["sadness"] == "sad" and ck.labels["contempt"] == "contempt"
    jaffe = load_spec("jaffe")
    assert jaffe.format == "jaffe" and not jaffe.pre_cropped and jaffe.labels["FE"] == "fear"
    assert isinstance(jaffe, DatasetSpec)


def test_unknown_dataset_lists_names():
    with pytest.raises(InputError) as e:
        load_spec("mpi-facial-expressions")
    assert "mpi-facial-expressions" in str(e.value) and "fer2013" in str(e.value) and "jaffe" in str(e.value)


def test_spec_from_path_and_errors(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('format = "folder"\npre_cropped = true\nsubject_pattern = \'^(P\\d+)-\'\n'
                 '[labels]\nhappyface = "happy"\n')
    spec = load_spec(str(p))
    assert spec.name == "mine" and spec.labels == {"happyface": "happy"} and spec.pre_cropped

    p.write_text('format = "folder"\nprecropped = true\n')
    with pytest.raises(InputError, match="unknown key 'precropped'.*allowed keys: .*pre_cropped"):
        load_spec(str(p))
    p.write_text('format = "folder"\npre_cropped = "yes"\n')
    with pytest.raises(InputError, match="pre_cropped"):
        load_spec(str(p))
    p.write_text('format = "videos"\n')
    with pytest.raises(InputError, match="allowed formats: folder"):
        load_spec(str(p))
    p.write_text('format = "folder"\n[labels]\nx = "confused"\n')
    with pytest.raises(InputError, match="confused"):
        load_spec(str(p))
    p.write_text('format = "folder"\n[split_names]\nTraining = "training"\n')
    with pytest.raises(InputError, match="allowed: train, val, test"):
        load_spec(str(p))
    p.write_text('format = "folder"\nsubject_pattern = "S\\\\d+"\n')
    with pytest.raises(InputError, match="group"):
        load_spec(str(p))
    with pytest.raises(InputError, match="does not exist"):
        load_spec(str(tmp_path / "nope.toml"))


def test_datasets_dir_env(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text('format = "flat"\n')
    monkeypatch.setenv("FACEBLOCKS_DATASETS", str(tmp_path))
    assert datasets_dir() == tmp_path and list_specs() == ["tiny"]
    assert load_spec("tiny").format == "flat"
    monkeypatch.setenv("FACEBLOCKS_DATASETS", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="FACEBLOCKS_DATASETS"):
        datasets_dir()
