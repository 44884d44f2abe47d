"""Likely label errors by confident learning (Northcutt, Jiang and Chuang, JAIR 2021), from out-of-sample
probabilities: every row scored by a model that did not train on it.

1. Per class j, the threshold t_j is the mean probability of j over the rows labelled j (its self-confidence).
2. A row's confident guess is the class whose probability reaches its threshold (the most probable of them
   when several do); rows where none does are not counted.
3. The confident joint C[i, j] counts rows labelled i whose confident guess is j; calibrated so each row sums
   to the count of label i, it estimates how many rows of label i truly belong to j.
4. Rows off its diagonal whose most probable class is not their label are the likely errors, ranked by the
   probability of their given label (self-confidence, lowest first) or by the normalised margin.

The same rows as cleanlab's ``find_label_issues(filter_by="confident_learning")`` (a test checks it; cleanlab
itself is a dev dependency only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mlops.core.errors import DataError

RankBy = Literal["self_confidence", "normalized_margin"]
_EPS = 1e-6


@dataclass
class LabelIssues:
    """The outcome for n rows and k classes."""

    given: np.ndarray  # (n,) the given labels, as class indices
    is_issue: np.ndarray  # (n,) bool: off the confident joint's diagonal and not predicted as given
    score: np.ndarray  # (n,) label quality, lower = more likely wrong
    suggested: np.ndarray  # (n,) the most probable class
    thresholds: np.ndarray  # (k,) per-class self-confidence thresholds
    confident_joint: np.ndarray  # (k, k) calibrated counts: rows labelled i, likely truly j

    @property
    def ranked(self) -> np.ndarray:
        """Positions of the flagged rows, most likely wrong first."""
        flagged = np.flatnonzero(self.is_issue)
        return flagged[np.argsort(self.score[flagged], kind="stable")]

    def noise_by_class(self) -> list[dict[str, float | int]]:
        """Per given label: its rows, the estimated rows truly of another class, and that share."""
        rows = []
        for i, counts in enumerate(self.confident_joint):
            total = int(counts.sum())
            wrong = int(total - counts[i])
            rows.append({"rows": total, "estimated_wrong": wrong, "estimated_noise": wrong / total if total else 0.0})
        return rows


def _check(labels: np.ndarray, proba: np.ndarray) -> None:
    if proba.ndim != 2 or proba.shape[0] != len(labels) or proba.shape[1] < 2:
        raise DataError(f"expected probabilities of shape (rows, classes >= 2) for {len(labels)} rows, "
                        f"found {proba.shape}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= proba.shape[1]):
        raise DataError("every label must be a class index of the probabilities.")


def quality_scores(labels: np.ndarray, proba: np.ndarray, rank_by: RankBy = "self_confidence") -> np.ndarray:
    """Label quality per row: p(given label), or (p(given) - max p(other) + 1) / 2 for the normalised margin."""
    own = proba[np.arange(len(labels)), labels]
    if rank_by == "self_confidence":
        return own
    others = proba.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (own - others.max(axis=1) + 1.0) / 2.0


def confident_thresholds(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Mean probability of each class over the rows labelled with it (2, unreachable, for an absent class)."""
    k = proba.shape[1]
    thresholds = np.array([proba[labels == j, j].mean() if np.any(labels == j) else 2.0 for j in range(k)])
    return np.clip(thresholds, 2 * _EPS, None)


def _calibrate(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rows rescaled to the label counts, then rounded keeping each row's total."""
    row_sums = np.clip(joint.sum(axis=1, keepdims=True), 1e-100, None)
    scaled = joint / row_sums * label_counts[:, None]
    floor = np.floor(scaled)
    short = (label_counts - floor.sum(axis=1)).round().astype(int)
    for i, missing in enumerate(short):  # largest remainders get the missing units
        if missing > 0:
            floor[i, np.argsort(-(scaled[i] - floor[i]), kind="stable")[:missing]] += 1
    return floor.astype(np.int64)


def find_label_issues(labels: np.ndarray, proba: np.ndarray, *, rank_by: RankBy = "self_confidence") -> LabelIssues:
    """Confident learning over ``labels`` (class indices, n) and out-of-sample ``proba`` (n, k)."""
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    _check(labels, proba)
    k = proba.shape[1]
    thresholds = confident_thresholds(labels, proba)
    confident = proba >= thresholds - _EPS
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, proba.argmax(axis=1), confident.argmax(axis=1))
    counted = n_confident > 0
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (labels[counted], guess[counted]), 1)
    np.fill_diagonal(joint, np.clip(joint.diagonal(), 1, None))
    label_counts = np.bincount(labels, minlength=k)
    off_diagonal = counted & (guess != labels)
    nudged = proba.copy()
    nudged[np.arange(len(labels)), labels] += _EPS
    predicted_as_given = nudged.argmax(axis=1) == labels
    return LabelIssues(given=labels, is_issue=off_diagonal & ~predicted_as_given, score=quality_scores(labels, proba, rank_by),
                       suggested=proba.argmax(axis=1), thresholds=thresholds,
                       confident_joint=_calibrate(joint, label_counts))
