"""One unit of work shared by every run type: build a fresh model, fit, predict, score."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.errors import MlopsError, ModelError
from mlops.model_interface import FitContext, ModelInterface, TextDataset, check_probabilities
from mlops.plugins import NamedConfig

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

PROBA_PREFIX = "proba_"
PREDICTED_COLUMN = "predicted_label"


def seed_everything(seed: int) -> None:
    """Seed Python and NumPy here; models seed their own frameworks (torch) from FitContext.seed."""
    random.seed(seed)
    np.random.seed(seed)


def proba_column(label: str) -> str:
    return f"{PROBA_PREFIX}{label}"


def compute_metrics(
    y_true: Sequence[str], proba: np.ndarray | None, labels: Sequence[str], *, y_pred: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro-F1, weighted P/R/F1, log-loss, a per-class report and the confusion matrix.

    The predicted label is ``y_pred`` when given (a decision column), else the argmax of ``proba``;
    log-loss needs ``proba`` and is None without it.
    """
    from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix, f1_score, log_loss,
                                 precision_recall_fscore_support)

    labels = list(labels)
    y_true = np.asarray(y_true, dtype=object)
    if y_pred is None:
        y_pred = np.asarray(labels, dtype=object)[np.asarray(proba).argmax(axis=1)]
    y_pred = np.asarray(y_pred, dtype=object)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted",
                                                               zero_division=0)
    loss = None
    if proba is not None:
        clipped = np.clip(proba, 1e-12, 1.0)
        loss = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_precision": float(precision),
        "weighted_recall": float(recall),
        "weighted_f1": float(f1),
        "log_loss": loss,
        "per_class": classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def predictions_frame(
    row_ids: np.ndarray, data: TextDataset, proba: np.ndarray, labels: Sequence[str]
) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({"row_id": row_ids, "text": list(data.texts)})
    if data.text_pairs is not None:
        frame["text_pair"] = list(data.text_pairs)
    if data.labels is not None:
        frame["label"] = list(data.labels)
    frame[PREDICTED_COLUMN] = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    for j, label in enumerate(labels):
        frame[proba_column(label)] = proba[:, j]
    return frame


@dataclass
class FoldOutcome:
    model: ModelInterface
    proba: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


def fit_and_predict(
    named: NamedConfig,
    train: TextDataset,
    val: TextDataset | None,
    test: TextDataset | None,
    labels: Sequence[str],
    context: FitContext,
) -> FoldOutcome:
    """A fresh model per call (nothing fitted is shared across folds), trained and applied to ``test``."""
    seed_everything(context.seed)
    timings: dict[str, float] = {}
    who = named.model_class.__name__
    started = time.perf_counter()
    try:
        model = named.build()
        model.fit(train, val if val is not None and len(val) else None, labels=list(labels), context=context)
        timings["train_s"] = time.perf_counter() - started
        proba = None
        if test is not None and len(test):
            started = time.perf_counter()
            proba = check_probabilities(model.predict_proba(test), len(test), labels, who)
            timings["predict_s"] = time.perf_counter() - started
    except MlopsError:
        raise
    except Exception as exc:  # model code is third-party territory: report it as a model failure
        raise ModelError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
    return FoldOutcome(model=model, proba=proba, timings=timings)


SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1", "log_loss")


def summarise_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and per-fold values of the headline metrics."""
    summary: dict[str, Any] = {"n_folds": len(fold_metrics)}
    for name in SUMMARY_METRICS:
        values = [float(m[name]) for m in fold_metrics]
        summary[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_fold": values,
        }
    return summary
