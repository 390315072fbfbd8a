"""Predictions as a pandas DataFrame: the --csv columns and rows, and a clear message without pandas."""

from __future__ import annotations

import csv
import sys

import pytest
from videofakes import two_person_frames, write_video

from inference.dataframe import predict_table, to_dataframe
from inference.predictions import ImagePrediction, PredictOptions
from prepro.errors import InputError


def test_the_table_has_the_csv_columns_and_rows(tmp_path):
    pytest.importorskip("pandas")
    clip = write_video(tmp_path / "two.avi", two_person_frames())
    table = predict_table("fer2013", clip, PredictOptions(every=5, csv=tmp_path / "p.csv"))
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    assert list(table.columns) == header and len(table) == len(rows) == 8
    assert list(table["frame"]) == [int(r[1]) for r in rows] and set(table["track"]) == {1, 2}
    assert table["p_happy"].tolist() == [float(r[header.index("p_happy")]) for r in rows]
    assert table.groupby("track").size().tolist() == [4, 4]  # one curve per person


def test_an_image_without_a_face_is_one_row_with_its_reason():
    pytest.importorskip("pandas")
    table = to_dataframe([ImagePrediction(path="x.png", error="no face found")], ["happy"], ["eyes"])
    assert len(table) == 1 and table.loc[0, "face"] == 0 and table.loc[0, "error"] == "no face found"
    assert table["p_happy"].isna().all()


def test_without_pandas_the_message_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(InputError, match=r"needs pandas.*faceblocks\[tables\]"):
        to_dataframe([], ["happy"], ["eyes"])
    with pytest.raises(InputError, match="needs pandas"):
        predict_table("fer2013", "photo.jpg")
