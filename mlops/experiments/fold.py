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
    #: The test probabilities before calibration, where the model calibrates and can give them (else None).
    proba_uncalibrated: np.ndarray | None = None


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
    started = time.perf_counter()
    try:
        model = named.build()
        model.fit(train, val if val is not None and len(val) else None, labels=list(labels), context=context)
        timings["train_s"] = time.perf_counter() - started
        proba = uncalibrated = None
        if test is not None and len(test):
            started = time.perf_counter()
            proba = check_probabilities(model.predict_proba(test), len(test), labels, who)
            timings["predict_s"] = time.perf_counter() - started
            predict_uncalibrated = getattr(model, "predict_proba_uncalibrated", None)
            if predict_uncalibrated is not None and getattr(model.training_arguments, "calibration", None):
                raw = predict_uncalibrated(test)
                uncalibrated = None if raw is None else check_probabilities(raw, len(test), labels, who)
    except MlopsError:
        raise
    except Exception as exc:  # model code is third-party territory: report it as a model failure
        raise ModelError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
    return FoldOutcome(model=model, proba=proba, timings=timings, proba_uncalibrated=uncalibrated)
