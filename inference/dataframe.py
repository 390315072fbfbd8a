"""Predictions as a pandas DataFrame: one row per face (or per image without one), with exactly
the columns of `predict --csv` (`inference.tables`). pandas is an optional extra
(``pip install 'faceblocks[tables]'``); without it, a clear InputError.

    from inference.dataframe import predict_table
    table = predict_table("fer2013", "clip.mp4", PredictOptions(every=5))
    table.groupby("track")["p_happy"].plot()
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from inference.classifier import Classifier
from inference.predict import predict
from inference.predictions import ImagePrediction, PredictOptions
from inference.tables import table_columns, table_rows
from prepro.errors import InputError

INSTALL_HINT = "pip install 'faceblocks[tables]' (or pip install pandas)"


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise InputError(f"a predictions table needs pandas, which is not installed: {INSTALL_HINT}") from None
    return pandas


def to_dataframe(predictions: Iterable[ImagePrediction], class_names: list[str], regions: list[str],
                 smoothed: bool = False):
    """The rows `predict --csv` writes for ``predictions``, as a DataFrame (empty cells as NaN)."""
    pandas = _pandas()
    columns = table_columns(class_names, regions, smoothed)
    rows = [[None if v == "" else v for v in row] for pred in predictions for row in table_rows(pred, columns)]
    return pandas.DataFrame(rows, columns=columns)


def predict_table(model: str | os.PathLike, inputs: Any = (), opts: PredictOptions = PredictOptions()):
    """`inference.predict.predict` as one DataFrame (`to_dataframe`); the model is loaded once."""
    _pandas()  # said before any work
    classifier = Classifier(model, opts.device, opts.tta_flip, opts.tta_shift)
    return to_dataframe(predict(classifier, inputs, opts), classifier.class_names, classifier.regions,
                        opts.smooth > 0)
