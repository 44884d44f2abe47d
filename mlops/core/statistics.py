"""Paired tests for comparing two classifiers scored on the same folds or the same rows.

Pure functions over numbers (no file I/O): the corrected resampled t-test of Nadeau & Bengio, the
Bayesian correlated t-test of Benavoli et al., and McNemar's exact test.

References:
    C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3),
    239-281, 2003.
    A. Benavoli, G. Corani, J. Demsar and M. Zaffalon, "Time for a Change: a Tutorial for Comparing
    Multiple Classifiers Through Bayesian Analysis", JMLR 18(77), 1-36, 2017 (section 4, the
    correlated t-test; first in G. Corani and A. Benavoli, Machine Learning 100, 285-304, 2015).
    Q. McNemar, "Note on the sampling error of the difference between correlated proportions or
    percentages", Psychometrika 12(2), 153-157, 1947.
    E. B. Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22(158),
    209-212, 1927 (the score interval of a proportion).
    B. Efron and R. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993 (chapter 13,
    the percentile interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class CorrectedTTest:
    """The corrected resampled t-test of a mean paired difference, with its confidence interval."""

    mean: float
    std_error: float
    ci_low: float
    ci_high: float
    t_statistic: float
    p_value: float
    df: int


@dataclass(frozen=True)
class BayesianComparison:
    """Posterior probabilities that the difference is above, inside or below the ROPE (they sum to 1)."""

    prob_better: float
    prob_rope: float
    prob_worse: float
    location: float
    scale: float
    df: int


def _check(diffs: Sequence[float], n_train: float, n_test: float) -> list[float]:
    values = [float(d) for d in diffs]
    if len(values) < 2:
        raise ValueError(f"a paired test over folds needs at least 2 fold differences, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"fold differences must be finite numbers, got {values}")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got n_train={n_train}, n_test={n_test}")
    return values


def _mean_and_variance(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, variance


def corrected_resampled_ttest(diffs: Sequence[float], n_train: float, n_test: float, *,
                              confidence: float = 0.95) -> CorrectedTTest:
    """Nadeau & Bengio (2003) corrected resampled t-test of the mean of k paired fold differences.

    The folds' training sets overlap, so the plain variance of the k differences underestimates the
    variance of their mean; the correction multiplies the sample variance ``s^2`` (ddof=1) by
    ``1/k + n_test/n_train`` instead of ``1/k``. Then ``t = mean / se`` with ``se = sqrt((1/k +
    n_test/n_train) * s^2)``, compared with a Student t with ``k - 1`` degrees of freedom (two-sided
    p-value); the interval is ``mean +- t_{(1+confidence)/2, k-1} * se``.

    With zero variance the interval collapses onto the mean, and the p-value is 0 for a nonzero mean
    (every fold agrees on a difference) and 1 for a zero one.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    values = _check(diffs, n_train, n_test)
    k = len(values)
    mean, variance = _mean_and_variance(values)
    se = math.sqrt((1 / k + n_test / n_train) * variance)
    df = k - 1
    if se == 0:
        t_statistic = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0 else 0.0
    else:
        t_statistic = mean / se
        p_value = float(2 * stats.t.sf(abs(t_statistic), df))
    half_width = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return CorrectedTTest(mean, se, mean - half_width, mean + half_width, t_statistic, min(1.0, p_value), df)


def bayesian_correlated_ttest(diffs: Sequence[float], n_train: float, n_test: float, *,
                              rope: float = 0.01) -> BayesianComparison:
    """Benavoli et al. (2017) Bayesian correlated t-test of k paired fold differences (model - baseline).

    The posterior of the mean difference is a Student t with ``k - 1`` degrees of freedom, location
    the mean difference and scale ``sqrt((1/k + rho/(1 - rho)) * s^2)``, where ``rho = n_test /
    (n_test + n_train)`` models the correlation that overlapping training sets induce (so ``rho/(1 -
    rho) = n_test/n_train``, the Nadeau-Bengio correction). Returned: ``P(diff > rope)`` (better),
    ``P(|diff| <= rope)`` (practically equivalent) and ``P(diff < -rope)`` (worse). With zero variance
    the posterior is a point mass at the mean.
    """
    if not rope >= 0:
        raise ValueError(f"rope must be >= 0, got {rope}")
    values = _check(diffs, n_train, n_test)
    k = len(values)
    mean, variance = _mean_and_variance(values)
    rho = n_test / (n_test + n_train)
    scale = math.sqrt((1 / k + rho / (1 - rho)) * variance)
    df = k - 1
    if scale == 0:
        better, worse = float(mean > rope), float(mean < -rope)
    else:
        better = float(stats.t.sf(rope, df, loc=mean, scale=scale))
        worse = float(stats.t.cdf(-rope, df, loc=mean, scale=scale))
    return BayesianComparison(better, max(0.0, 1.0 - better - worse), worse, mean, scale, df)


def discordant_pairs(truth: Sequence, model_predictions: Sequence, baseline_predictions: Sequence) -> tuple[int, int]:
    """``(b, c)``: rows only the model got right, and rows only the baseline got right."""
    if not len(truth) == len(model_predictions) == len(baseline_predictions):
        raise ValueError(f"need one prediction per row, got {len(truth)} labels, {len(model_predictions)} and "
                         f"{len(baseline_predictions)} predictions")
    b = c = 0
    for label, model, baseline in zip(truth, model_predictions, baseline_predictions, strict=True):
        model_right, baseline_right = model == label, baseline == label
        b += model_right and not baseline_right
        c += baseline_right and not model_right
    return int(b), int(c)


def mcnemar_exact_p_value(b: int, c: int) -> float:
    """McNemar's exact test (McNemar 1947): two-sided binomial test of the discordant pairs.

    Under the null hypothesis that both classifiers err equally often, each of the ``b + c`` rows on
    which exactly one is right is equally likely to favour either, so ``p = min(1, 2 * P(X <=
    min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when there is no discordant row.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return min(1.0, float(2 * stats.binom.cdf(min(b, c), b + c, 0.5)))


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson's score interval of a proportion ``successes / n`` (say, accuracy on ``n`` test rows).

    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the normal quantile of
    ``(1 + confidence) / 2``; unlike the normal approximation it stays inside [0, 1] and is not empty at
    ``p = 0`` or ``1`` (2 rows of 2 right: [0.34, 1]). None for ``n = 0``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    z = float(stats.norm.ppf((1 + confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_macro_f1_interval(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int, *,
                                n_resamples: int = 1000, seed: int = 0,
                                confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of macro-F1 over ``n_labels`` classes (Efron & Tibshirani 1993).

    ``y_true`` and ``y_pred`` hold class indices (0 .. n_labels - 1; anything else counts for no class).
    Each of ``n_resamples`` resamples draws the rows with replacement (``numpy.random.default_rng(seed)``,
    so the same seed gives the same interval); per class F1 is ``2 tp / (n_true + n_predicted)``, 0 when
    both are 0, as scikit-learn's ``f1_score(labels=..., average="macro", zero_division=0)``. None for no rows.
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) != len(y_pred):
        raise ValueError(f"need one prediction per row, got {len(y_true)} labels and {len(y_pred)} predictions")
    n = len(y_true)
    if n == 0 or n_labels < 1 or n_resamples < 1:
        return None
    buckets = n_labels + 1  # the last bucket collects indices outside 0 .. n_labels - 1
    y_true = np.where((y_true >= 0) & (y_true < n_labels), y_true, n_labels)
    y_pred = np.where((y_pred >= 0) & (y_pred < n_labels), y_pred, n_labels)
    rng = np.random.default_rng(seed)
    scores = np.empty(n_resamples)
    batch = max(1, min(n_resamples, 4_000_000 // n))
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        rows = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * buckets)[:, None]
        t, p = y_true[rows] + offsets, y_pred[rows] + offsets

        def counts(codes):
            return np.bincount(codes.ravel(), minlength=size * buckets).reshape(size, buckets)[:, :n_labels]

        tp, n_true, n_pred = counts(t[t == p]), counts(t), counts(p)
        total = n_true + n_pred
        f1 = np.divide(2 * tp, total, out=np.zeros(total.shape), where=total > 0)
        scores[start:start + size] = f1.mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)
