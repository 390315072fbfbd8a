"""Accuracy and macro-F1 of predicted labels: what training validates and early-stops on.
"""

from __future__ import annotations

import numpy as np


def scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 over the classes present in ``y`` or ``p`` (scikit-learn)."""
    from sklearn.metrics import f1_score

    if len(y) == 0:
        return float("nan"), float("nan")
    return float((y == p).mean()), float(f1_score(y, p, average="macro", zero_division=0))
