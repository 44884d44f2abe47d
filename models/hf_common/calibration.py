"""Temperature scaling (Guo et al., 2017) for classifiers that produce logits.

One temperature T > 0 divides every logit: ``softmax(logits / T)`` keeps each row's argmax and changes only
how confident the probabilities are. T is fitted on validation logits (never on test rows) by minimising
their log-loss over log T, bounded to [1e-2, 1e2]. The log-loss of ``softmax(b * logits)`` is convex in
``b = 1 / T``, so the bounded one-dimensional search finds its minimum.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from mlops.core.calibration_error import expected_calibration_error

logger = logging.getLogger(__name__)

TEMPERATURE_BOUNDS = (1e-2, 1e2)


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    return scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64."""
    return np.exp(_log_softmax(logits, temperature))


def mean_log_loss(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true column indices ``y`` under ``softmax(logits / temperature)``."""
    log_p = _log_softmax(logits, temperature)
    return float(-log_p[np.arange(len(y)), np.asarray(y)].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in ``TEMPERATURE_BOUNDS`` that minimises the log-loss of ``softmax(logits / T)`` on (logits, y)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one row")
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: mean_log_loss(logits, y, math.exp(log_t)), bounds=(low, high),
                             method="bounded", options={"xatol": 1e-6})
    temperature = float(math.exp(result.x))
    # never worse on the data it was fitted on than leaving the model alone
    return temperature if mean_log_loss(logits, y, temperature) <= mean_log_loss(logits, y) else 1.0


def calibration_record(method: str, temperature: float, logits: np.ndarray | None,
                       y: np.ndarray | None) -> dict[str, Any]:
    """What ``runtime_info()["calibration"]`` records: T and the validation log-loss and ECE before and after."""
    record: dict[str, Any] = {"method": method, "temperature": temperature,
                              "validation_rows": 0 if y is None else int(len(y))}
    for name in ("validation_log_loss_before", "validation_log_loss_after", "validation_ece_before",
                 "validation_ece_after"):
        record[name] = None
    if logits is not None and y is not None and len(y):
        record.update(
            validation_log_loss_before=mean_log_loss(logits, y), validation_log_loss_after=mean_log_loss(
                logits, y, temperature),
            validation_ece_before=expected_calibration_error(softmax(logits), y),
            validation_ece_after=expected_calibration_error(softmax(logits, temperature), y),
        )
    return record


def calibrate_temperature(logits: np.ndarray | None, y: np.ndarray | None) -> tuple[float, dict[str, Any]]:
    """(T, its record) fitted on validation ``logits`` and true column indices ``y``.

    Without validation rows (``logits`` or ``y`` None or empty) T stays 1, with a warning, and the record
    says so (``validation_rows`` 0, the before/after figures None).
    """
    if logits is None or y is None or len(y) == 0:
        logger.warning("calibration 'temperature' is fitted on the validation split, and there is none: keeping "
                       "T = 1 (uncalibrated). Train with a validation split, or set training_arguments.calibration "
                       "to null.")
        return 1.0, calibration_record("temperature", 1.0, None, None)
    temperature = fit_temperature(logits, y)
    record = calibration_record("temperature", temperature, logits, y)
    logger.info("temperature scaling: T = %.4f fitted on %d validation rows; validation log-loss %.4f -> %.4f, "
                "ECE %.4f -> %.4f (set with training_arguments.calibration)", temperature, len(y),
                record["validation_log_loss_before"], record["validation_log_loss_after"],
                record["validation_ece_before"], record["validation_ece_after"])
    return temperature, record
