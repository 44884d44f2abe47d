"""One fold's unit of work, shared by every run type and executor: build a fresh model, fit, predict."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mlops.core.errors import MlopsError, ModelError
from mlops.core.metrics import PREDICTED_COLUMN, proba_column
from mlops.core.model_interface import FitContext, ModelInterface, check_probabilities
from mlops.core.multilabel import (DEFAULT_THRESHOLD, PREDICTED_LABELS_COLUMN, decide, is_label_sets, join_labels,
                                   label_matrix, label_sets_of, tune_thresholds)
from mlops.core.plugins import NamedConfig
from mlops.core.text_dataset import TextDataset

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python and NumPy here; models seed their own frameworks (torch) from FitContext.seed."""
    random.seed(seed)
    np.random.seed(seed)


def predictions_frame(
    row_ids: np.ndarray, data: TextDataset, proba: np.ndarray, labels: Sequence[str], *,
    thresholds: Sequence[float] | None = None, separator: str | None = None,
) -> pd.DataFrame:
    """One row per scored text: its truth, the prediction and a probability column per label. With
    ``separator`` (multi-label) label sets are written joined by it, and the prediction is every label whose
    probability reaches its threshold (``predicted_labels``)."""
    import pandas as pd

    frame = pd.DataFrame({"row_id": row_ids, "text": list(data.texts)})
    if data.text_pairs is not None:
        frame["text_pair"] = list(data.text_pairs)
    if separator is not None:
        if data.labels is not None:
            frame["label"] = [join_labels(row, separator) for row in data.labels]
        frame[PREDICTED_LABELS_COLUMN] = [join_labels(row, separator)
                                          for row in label_sets_of(decide(proba, thresholds), list(labels))]
        for j, label in enumerate(labels):
            frame[proba_column(label)] = proba[:, j]
        return frame
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
    #: The test probabilities before calibration, where the model calibrates and can give them (else None).
    proba_uncalibrated: np.ndarray | None = None
    #: Multi-label: each label's decision threshold, tuned on the val rows (0.5 without them).
    thresholds: list[float] | None = None
    #: The val rows' probabilities (None without val rows): stored with a run, so an ensemble of this config
    #: and others can later fit its weights on them without training this config again.
    val_proba: np.ndarray | None = None


def fit_and_predict(
    named: NamedConfig,
    train: TextDataset,
    val: TextDataset | None,
    test: TextDataset | None,
    labels: Sequence[str],
    context: FitContext,
) -> FoldOutcome:
    """A fresh model per call (nothing fitted is shared across folds), trained and applied to ``test``.

    A model whose ``training_arguments.calibration`` is set and that has an (optional)
    ``predict_proba_uncalibrated(data)`` also gives the test probabilities before calibration (it may
    return None when it cannot), for the fold's ``metrics_uncalibrated``.
    """
    seed_everything(context.seed)
    timings: dict[str, float] = {}
    who = named.model_class.__name__
    multi = is_label_sets(train.labels)
    if multi and not named.model_class.supports_multi_label:
        raise ModelError(f"{named.name} ({who}) does not support multi-label data; use a config of a family "
                         "that does (tfidf_logreg, minilm and the other Hugging Face encoders).")
    thresholds = val_proba = None
    has_val = val is not None and len(val) > 0
    started = time.perf_counter()
    try:
        model = named.build()
        model.fit(train, val if has_val else None, labels=list(labels), context=context)
        timings["train_s"] = time.perf_counter() - started
        if has_val:
            started = time.perf_counter()
            val_proba = check_probabilities(model.predict_proba(val), len(val), labels, who)
            timings["predict_val_s"] = time.perf_counter() - started
        if multi:
            thresholds = (tune_thresholds(label_matrix(val.labels, list(labels)), val_proba).tolist() if has_val
                          else [DEFAULT_THRESHOLD] * len(labels))
        proba = uncalibrated = None
        if test is not None and len(test):
            started = time.perf_counter()
            proba = (val_proba if test is val else  # the final model scores its own val rows
                     check_probabilities(model.predict_proba(test), len(test), labels, who))
            timings["predict_s"] = time.perf_counter() - started
            predict_uncalibrated = getattr(model, "predict_proba_uncalibrated", None)
            if predict_uncalibrated is not None and getattr(model.training_arguments, "calibration", None):
                raw = predict_uncalibrated(test)
                uncalibrated = None if raw is None else check_probabilities(raw, len(test), labels, who)
    except MlopsError:
        raise
    except Exception as exc:  # model code is third-party territory: report it as a model failure
        raise ModelError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
    return FoldOutcome(model=model, proba=proba, timings=timings, proba_uncalibrated=uncalibrated,
                       thresholds=thresholds, val_proba=val_proba)
