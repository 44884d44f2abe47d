"""The metrics of a run: per-fold scores, single-split intervals, calibration error, the fold summary."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops.core.calibration_error import expected_calibration_error

logger = logging.getLogger(__name__)

PROBA_PREFIX = "proba_"
PREDICTED_COLUMN = "predicted_label"


def proba_column(label: str) -> str:
    return f"{PROBA_PREFIX}{label}"


def compute_metrics(
    y_true: Sequence[str], proba: np.ndarray | None, labels: Sequence[str], *, y_pred: Sequence[str] | None = None,
    intervals: bool = False, seed: int = 0, thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, weighted P/R/F1, log-loss, ECE, a per-class report and the confusion matrix.

    The predicted label is ``y_pred`` when given (a decision column), else the argmax of ``proba``;
    log-loss and ECE (``expected_calibration_error``) need ``proba`` and are None without it. With
    ``intervals`` (a single split, where no spread across folds says how sure the figure is) also
    ``accuracy_ci`` and ``macro_f1_ci``, 95% intervals (see ``single_split_intervals``).
    """
    from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix, f1_score, log_loss,
                                 precision_recall_fscore_support)

    from mlops.core.multilabel import is_label_sets, label_matrix, multi_label_metrics

    if is_label_sets(y_true):  # label sets: see mlops.core.multilabel (``thresholds`` cut the probabilities)
        return multi_label_metrics(y_true, proba, labels, thresholds=thresholds,
                                   y_pred=None if y_pred is None else label_matrix(y_pred, list(labels)))
    labels = list(labels)
    y_true = np.asarray(y_true, dtype=object)
    if y_pred is None:
        y_pred = np.asarray(labels, dtype=object)[np.asarray(proba).argmax(axis=1)]
    y_pred = np.asarray(y_pred, dtype=object)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted",
                                                               zero_division=0)
    loss = ece = None
    if proba is not None:
        clipped = np.clip(proba, 1e-12, 1.0)
        loss = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
        column = {str(label): j for j, label in enumerate(labels)}
        ece = expected_calibration_error(proba, np.fromiter((column.get(str(y), -1) for y in y_true), dtype=np.int64,
                                                            count=len(y_true)))
    extra = single_split_intervals(y_true, y_pred, labels, seed) if intervals else {}
    return {
        "n": int(len(y_true)),
        **extra,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_precision": float(precision),
        "weighted_recall": float(recall),
        "weighted_f1": float(f1),
        "log_loss": loss,
        "ece": ece,
        "per_class": classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


#: How the intervals of a single split are made (recorded next to them in metrics.json).
INTERVAL_METHOD = ("95%: Wilson score interval (accuracy); percentile bootstrap over the test rows, 1,000 resamples "
                   "seeded with the experiment seed (macro-F1)")


def single_split_intervals(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], seed: int) -> dict[str, Any]:
    """95% intervals of accuracy (Wilson) and macro-F1 (seeded percentile bootstrap, 1,000 resamples)."""
    from mlops.core.statistics import bootstrap_macro_f1_interval, wilson_interval

    column = {str(label): j for j, label in enumerate(labels)}
    true_idx = np.fromiter((column.get(str(y), -1) for y in y_true), dtype=np.int64, count=len(y_true))
    pred_idx = np.fromiter((column.get(str(y), -2) for y in y_pred), dtype=np.int64, count=len(y_pred))
    accuracy = wilson_interval(int((y_true == y_pred).sum()), len(y_true))
    macro_f1 = bootstrap_macro_f1_interval(true_idx, pred_idx, len(labels), n_resamples=1000, seed=seed)
    return {"accuracy_ci": None if accuracy is None else list(accuracy),
            "macro_f1_ci": None if macro_f1 is None else list(macro_f1), "ci_method": INTERVAL_METHOD}


SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1", "log_loss", "ece")


def summarise_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and per-fold values of the headline metrics (None where a fold lacks the metric:
    no probabilities, or a fold resumed from before the metric was recorded)."""
    from mlops.core.multilabel import MULTI_LABEL
    from mlops.core.multilabel import SUMMARY_METRICS as MULTI_LABEL_METRICS

    summary: dict[str, Any] = {"n_folds": len(fold_metrics)}
    multi = bool(fold_metrics) and fold_metrics[0].get("task") == MULTI_LABEL
    for name in MULTI_LABEL_METRICS + ("accuracy",) if multi else SUMMARY_METRICS:
        raw = [m.get(name) for m in fold_metrics]
        if any(value is None for value in raw):
            summary[name] = {"mean": None, "std": None, "per_fold": raw}
            continue
        values = [float(value) for value in raw]
        summary[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_fold": values,
        }
    return summary
