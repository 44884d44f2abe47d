"""The expected calibration error (ECE) of predicted probabilities."""

from __future__ import annotations

import numpy as np

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float | None:
    """ECE of the top-class probability: sum over equal-width confidence bins of |accuracy - mean confidence|
    times the bin's share of rows (Guo et al. 2017). ``y_true`` holds column indices (-1: never right).

    Bin b of ``n_bins`` holds confidences in (b / n_bins, (b + 1) / n_bins]; None for no rows.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if len(proba) == 0:
        return None
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        rows = bins == b
        total += abs(float(correct[rows].mean()) - float(confidence[rows].mean())) * rows.sum() / len(proba)
    return float(total)
