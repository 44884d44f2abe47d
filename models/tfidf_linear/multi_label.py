"""Multi-label TF-IDF: one binary logistic regression per label over the shared features (one-vs-rest), each
label's probability its own sigmoid. A label that is always (or never) present in the training rows gets a
constant probability: its training share, clipped to [0.001, 0.999]."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator


class MultiLabelLogistic(BaseEstimator):
    """The classifier step of a multi-label TF-IDF pipeline: ``fit(X, Y)`` with Y a (rows, labels) 0/1 matrix."""

    def __init__(self, C: float, max_iter: int, class_weight: str | None, seed: int) -> None:
        self.C, self.max_iter, self.class_weight, self.seed = C, max_iter, class_weight, seed

    def fit(self, X, Y: np.ndarray) -> MultiLabelLogistic:
        from sklearn.linear_model import LogisticRegression

        Y = np.asarray(Y)
        self.coef_ = np.zeros((Y.shape[1], X.shape[1]), dtype=np.float64)
        self.intercept_ = np.zeros(Y.shape[1], dtype=np.float64)
        self.classes_ = np.arange(Y.shape[1])
        self.weighted_ = []
        for j in range(Y.shape[1]):
            column = Y[:, j]
            share = float(column.mean()) if len(column) else 0.0
            if column.min() == column.max():
                p = min(max(share, 1e-3), 1 - 1e-3)
                self.intercept_[j] = np.log(p / (1 - p))
                continue
            weight = self.class_weight
            if weight == "auto":  # balanced when one side outnumbers the other more than 1.5 to 1
                weight = "balanced" if max(share, 1 - share) / min(share, 1 - share) > 1.5 else None
            if weight == "balanced":
                self.weighted_.append(j)
            model = LogisticRegression(C=self.C, class_weight=weight, max_iter=self.max_iter, random_state=self.seed)
            model.fit(X, column)
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X @ self.coef_.T + self.intercept_)

    def predict_proba(self, X) -> np.ndarray:
        from scipy.special import expit

        return expit(self.decision_function(X))
