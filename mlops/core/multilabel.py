"""Multi-label rows: each row carries a set of labels (possibly empty). Label sets travel as tuples in
``TextDataset.labels``; models return one independent probability per label; per-label thresholds, tuned on
validation rows, turn them into predicted sets.

Metrics follow scikit-learn's definitions (tested against it): micro-, macro- and samples-F1 (samples-F1 counts a
row with no true and no predicted label as 1, like ``zero_division=1``), subset accuracy, Hamming loss,
per-label precision/recall/F1/support, label cardinality, and the expected calibration error per label (each
label's probability scored as a binary event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: How a multi-label experiment and model folder say what they are (``experiment.json`` / ``mlops_model.json``).
MULTI_LABEL = "multi_label"
SINGLE_LABEL = "single_label"
DEFAULT_SEPARATOR = "|"
DEFAULT_THRESHOLD = 0.5
PREDICTED_LABELS_COLUMN = "predicted_labels"
#: Headline metrics of a multi-label fold (the fold summary's rows).
SUMMARY_METRICS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "ece")
#: Lower is better for these (compare-models, tune).
LOWER_IS_BETTER = frozenset({"hamming_loss", "log_loss", "ece"})


@dataclass(frozen=True)
class Task:
    """What a row's label is: one class (``single_label``) or a set of labels (``multi_label``)."""

    kind: str = SINGLE_LABEL
    separator: str = DEFAULT_SEPARATOR  # how label sets are written in one column, and in predictions
    target_columns: tuple[str, ...] = ()  # 0/1 columns, one per label, instead of one separated column
    allow_empty: bool = False  # rows with no label are "none of these" rows

    @property
    def multi_label(self) -> bool:
        return self.kind == MULTI_LABEL

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "separator": self.separator, "target_columns": list(self.target_columns),
                "allow_empty": self.allow_empty}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Task:
        if not data:
            return cls()
        return cls(kind=data.get("type", SINGLE_LABEL), separator=data.get("separator", DEFAULT_SEPARATOR),
                   target_columns=tuple(data.get("target_columns") or ()), allow_empty=bool(data.get("allow_empty")))


def is_label_sets(values: Sequence | None) -> bool:
    """Whether ``values`` (a TextDataset's labels) are label sets rather than one class per row."""
    return values is not None and len(values) > 0 and isinstance(values[0], (tuple, list, frozenset))


def label_matrix(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """(rows, labels) 0/1 matrix; a label outside ``labels`` is ignored."""
    column = {label: j for j, label in enumerate(labels)}
    matrix = np.zeros((len(label_sets), len(labels)), dtype=np.int8)
    for i, row in enumerate(label_sets):
        for label in row:
            j = column.get(label)
            if j is not None:
                matrix[i, j] = 1
    return matrix


def label_sets_of(matrix: np.ndarray, labels: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(labels[j] for j in np.flatnonzero(row)) for row in np.asarray(matrix)]


def decide(proba: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    """0/1 predictions: a label is predicted when its probability reaches its threshold."""
    proba = np.asarray(proba, dtype=np.float64)
    cut = np.full(proba.shape[1], DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return (proba >= cut[None, :]).astype(np.int8)


def join_labels(label_set: Sequence[str], separator: str) -> str:
    return separator.join(label_set)


def _best_cut(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold maximising F1 of ``scores`` against 0/1 ``truth`` (at least one positive). A threshold taking
    the top i rows sits halfway between the i-th score and the next lower one (the widest margin on these rows);
    among equally good thresholds, the one closest to 0.5."""
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    f1 = 2 * np.cumsum(truth) / (np.arange(1, len(scores) + 1) + int(truth.sum()))
    lower = np.r_[scores[1:], 0.0]
    f1 = np.where(lower < scores, f1, -1.0)  # a threshold takes every row with the same probability
    cuts = (scores + lower) / 2
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(cuts[best][np.argmin(np.abs(cuts[best] - DEFAULT_THRESHOLD))])


def tune_thresholds(y_true: np.ndarray, proba: np.ndarray, *, shrinkage: float = 0.0) -> np.ndarray:
    """Per label, the threshold that maximises that label's F1 on these rows.

    With ``shrinkage`` k > 0, a label with p positive rows gets (p * its own + k * shared) / (p + k), where the
    shared threshold maximises micro-F1 over every label's rows at once: a rare label's threshold, tuned on a
    handful of positives, is pulled towards the one all labels agree on. A label without a positive row gets the
    shared threshold (0.5 when no label has one; with k = 0, 0.5); k = inf gives every label the shared one.
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    positives = y_true.sum(axis=0)
    shared = DEFAULT_THRESHOLD
    if shrinkage > 0 and positives.sum() > 0:
        shared = _best_cut(proba.ravel(), y_true.ravel())
    thresholds = np.full(proba.shape[1], shared)
    for j in np.flatnonzero(positives):
        own = _best_cut(proba[:, j], y_true[:, j])
        thresholds[j] = shared if np.isinf(shrinkage) else (positives[j] * own + shrinkage * shared) / (
            positives[j] + shrinkage)
    return thresholds


def _binary_ece(proba: np.ndarray, truth: np.ndarray, n_bins: int) -> float:
    """ECE of one label's probability as a binary forecast (confidence: max(p, 1 - p))."""
    from mlops.core.calibration_error import expected_calibration_error

    two = np.column_stack([1.0 - proba, proba])
    return expected_calibration_error(two, truth.astype(np.int64), n_bins)


def multi_label_metrics(label_sets: Sequence[Sequence[str]], proba: np.ndarray | None, labels: Sequence[str], *,
                        thresholds: Sequence[float] | None = None, y_pred: np.ndarray | None = None) -> dict[str, Any]:
    """The multi-label counterpart of ``compute_metrics``; predictions are ``y_pred`` (0/1) when given, else
    ``proba`` cut at ``thresholds`` (0.5 when None)."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    from mlops.core.calibration_error import ECE_BINS

    labels = list(labels)
    y_true = label_matrix(label_sets, labels)
    if y_pred is None:
        y_pred = decide(proba, thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per_label = {label: {"precision": float(precision[j]), "recall": float(recall[j]), "f1-score": float(f1[j]),
                         "support": int(support[j]), "predicted": int(y_pred[:, j].sum())}
                 for j, label in enumerate(labels)}
    ece_per_label = None
    if proba is not None and len(y_true):
        ece_per_label = {label: _binary_ece(proba[:, j], y_true[:, j], ECE_BINS) for j, label in enumerate(labels)}
    co_occurrence = (y_true.T.astype(np.int64) @ y_pred.astype(np.int64)).tolist()
    return {
        "task": MULTI_LABEL,
        "n": int(len(y_true)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=1)) if len(y_true) else 0.0,
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        # comparable with single-label runs' "accuracy" column in tables: the share of rows whose set is exact
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "label_cardinality": {"true": float(y_true.sum(axis=1).mean()) if len(y_true) else 0.0,
                              "predicted": float(y_pred.sum(axis=1).mean()) if len(y_true) else 0.0},
        "ece": (None if ece_per_label is None else float(np.mean(list(ece_per_label.values())))),
        "ece_per_label": ece_per_label,
        "log_loss": None,
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "per_class": per_label,
        # rows: true label, columns: predicted label; cell: rows with both (the multi-label confusion view)
        "co_occurrence": {"labels": labels, "matrix": co_occurrence},
    }
