"""Learning curves and their extrapolation: would more labels help, and by how much?

Inside each backtesting fold the model trains on nested, stratified subsets of that fold's training rows (the
same subsets for every model: a seeded order per class, the first share of it), keeps the fold's val rows for
early stopping, and is scored on the fold's test rows. The curve fitted to the scores is an inverse power law,
score(n) = a - b * n^(-c) (Figueroa et al. 2012, "Predicting sample size required for classification
performance"; Hestness et al. 2017): it rises fast, then flattens towards a ceiling ``a``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
_BOOTSTRAPS = 200


def _class_orders(y: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {label: rng.permutation(np.flatnonzero(y == label)) for label in np.unique(y)}


def nested_subsets(y: Sequence, fractions: Sequence[float], seed: int) -> dict[float, np.ndarray]:
    """Positions into ``y`` per fraction: stratified (each class's share kept, at least one row of each class)
    and nested (a smaller fraction's rows are inside every larger one's)."""
    orders = _class_orders(np.asarray(y), seed)
    subsets = {}
    for fraction in sorted(fractions):
        picked = [order[: max(1, math.ceil(fraction * len(order) - 1e-9))] for order in orders.values()]
        subsets[fraction] = np.sort(np.concatenate(picked))
    return subsets


def nested_per_class(y: Sequence, counts: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """Positions into ``y`` per count: ``count`` rows of each class (all of a class that has fewer), nested like
    ``nested_subsets`` and drawn from the same seeded order per class: the few-shot sizes of a learning curve."""
    orders = _class_orders(np.asarray(y), seed)
    return {count: np.sort(np.concatenate([order[:count] for order in orders.values()])) for count in sorted(counts)}


def power_law(n, a, b, c):
    return a - b * np.power(n, -c)


@dataclass
class CurveFit:
    a: float
    b: float
    c: float

    def __call__(self, n) -> np.ndarray:
        return power_law(np.asarray(n, dtype=np.float64), self.a, self.b, self.c)


def fit_curve(rows: Sequence[float], scores: Sequence[float]) -> CurveFit | None:
    """Least-squares inverse power law through (rows, score) points; None when it cannot be fitted."""
    from scipy.optimize import curve_fit

    rows, scores = np.asarray(rows, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if len(np.unique(rows)) < 3:
        return None
    start = (min(1.0, scores.max() + 0.02), max(1e-3, (scores.max() - scores.min()) * rows.min() ** 0.5), 0.5)
    try:
        (a, b, c), _ = curve_fit(power_law, rows, scores, p0=start, bounds=([0.0, 0.0, 0.01], [1.0, np.inf, 3.0]),
                                 maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    return CurveFit(float(a), float(b), float(c))


def doubling_gain(rows: np.ndarray, scores: np.ndarray, folds: np.ndarray, full_rows: float,
                  seed: int) -> dict[str, float | None]:
    """The fitted gain from full_rows to 2 x full_rows labelled rows, with a 95% interval from resampling
    whole folds (each fold's points kept together) and refitting."""
    fitted = fit_curve(rows, scores)
    if fitted is None:
        return {"gain": None, "ci_low": None, "ci_high": None, "ceiling": None}
    gain = float(fitted(2 * full_rows) - fitted(full_rows))
    rng = np.random.default_rng(seed)
    unique = np.unique(folds)
    gains = []
    for _ in range(_BOOTSTRAPS if len(unique) > 1 else 0):
        chosen = rng.choice(unique, len(unique), replace=True)
        mask = np.concatenate([np.flatnonzero(folds == f) for f in chosen])
        refit = fit_curve(rows[mask], scores[mask])
        if refit is not None:
            gains.append(float(refit(2 * full_rows) - refit(full_rows)))
    low, high = (np.percentile(gains, [2.5, 97.5]).tolist() if len(gains) >= 20 else (None, None))
    return {"gain": gain, "ci_low": low, "ci_high": high, "ceiling": fitted.a,
            "fit": {"a": fitted.a, "b": fitted.b, "c": fitted.c}}


def extrapolation_check(rows: np.ndarray, scores: np.ndarray, fractions: np.ndarray) -> dict[str, float] | None:
    """Fit on the fractions up to 0.5 only, predict the score at the largest fraction, compare with the measured.
    (Per-class sizes pass their share of the largest size as ``fractions``.)"""
    top = fractions.max()
    early = fractions <= 0.5 + 1e-9
    if top <= 0.5 or len(np.unique(fractions[early])) < 3:
        return None
    fitted = fit_curve(rows[early], scores[early])
    if fitted is None:
        return None
    at_top = fractions == top
    predicted = float(fitted(rows[at_top].mean()))
    measured = float(scores[at_top].mean())
    return {"fit_on_fractions_up_to": 0.5, "predicted": predicted, "measured": measured, "error": predicted - measured}
