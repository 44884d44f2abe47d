"""Splitting multi-label rows: iterative stratification over leakage groups, and the warning for a label too rare
to score. ``mlops.data.splitting.build_split_plan`` uses these when its ``y`` is a (rows, labels) 0/1 matrix."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mlops.core.errors import DataError

logger = logging.getLogger(__name__)


def iterative_fold_ids(y: np.ndarray, groups: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """A fold id per row for a (rows, labels) 0/1 matrix ``y``: iterative stratification (Sechidis, Tsoumakas and
    Vlahavas 2011) over leakage groups, every group inside one fold.

    A group counts as one example whose label counts are its rows' sums. Repeatedly, the label with the fewest
    rows still to place is taken, and each of its groups (largest first, ties in a seeded random order) goes to
    the fold that most wants that label (its desired count minus what it has), ties to the fold that wants the
    most rows, then at random; the folds' wants drop by the group's counts. Groups with no label go last, each to
    the fold that wants the most rows. ``ratios`` are the folds' shares (K equal ones for K folds)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.int64)
    ratios = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    _, group_codes = np.unique(groups, return_inverse=True)
    n_groups = int(group_codes.max()) + 1 if len(group_codes) else 0
    counts = np.zeros((n_groups, y.shape[1]), dtype=np.int64)
    np.add.at(counts, group_codes, y)
    sizes = np.bincount(group_codes, minlength=n_groups)
    want_label = ratios[:, None] * counts.sum(axis=0)[None, :]
    want_rows = ratios * len(y)
    fold_of_group = np.full(n_groups, -1, dtype=np.int64)
    remaining = counts.sum(axis=0).astype(np.float64)
    tiebreak = rng.permutation(n_groups)

    def place(g: int, label: int | None) -> None:
        k = len(ratios)
        keys = (rng.random(k), want_rows) if label is None else (rng.random(k), want_rows, want_label[:, label])
        fold = int(np.lexsort(keys)[-1])  # the largest last key, then the next, then at random
        fold_of_group[g] = fold
        want_label[fold] -= counts[g]
        want_rows[fold] -= sizes[g]
        remaining[:] -= counts[g]

    while remaining.sum() > 0:
        open_labels = np.flatnonzero(remaining > 0)
        label = int(open_labels[np.argmin(remaining[open_labels])])
        members = np.flatnonzero((counts[:, label] > 0) & (fold_of_group < 0))
        members = members[np.lexsort((tiebreak[members], -sizes[members]))]
        for g in members:
            place(int(g), label)
    for g in np.flatnonzero(fold_of_group < 0)[np.argsort(tiebreak[fold_of_group < 0])]:
        place(int(g), None)
    return fold_of_group[group_codes]


class MultilabelHoldout:
    """One (train, test) split of label sets by iterative stratification; groups stay on one side."""

    def __init__(self, test_size: float, seed: int = 42) -> None:
        if not 0.0 < test_size < 1.0:
            raise DataError(f"a split size must be between 0 and 1 (exclusive), found {test_size}.")
        self.test_size = test_size
        self.seed = seed

    def split(self, X: Sequence, y: np.ndarray, groups: Sequence | None = None):
        y, groups = np.asarray(y), np.arange(len(y)) if groups is None else np.asarray(groups)
        fold = iterative_fold_ids(y, groups, [1.0 - self.test_size, self.test_size], self.seed)
        train, test = np.flatnonzero(fold == 0), np.flatnonzero(fold == 1)
        if not len(train) or not len(test):
            raise ValueError(f"a share of {self.test_size:g} of {len(y)} rows leaves one side empty.")
        yield train, test


class MultilabelFolds:
    """K folds of label sets by iterative stratification; every group inside one fold."""

    def __init__(self, n_splits: int, seed: int = 42) -> None:
        if n_splits < 2:
            raise DataError(f"--cv-folds must be at least 2, found {n_splits}.")
        self.n_splits = n_splits
        self.seed = seed

    def split(self, X: Sequence, y: np.ndarray, groups: Sequence | None = None):
        y, groups = np.asarray(y), np.arange(len(y)) if groups is None else np.asarray(groups)
        if len(np.unique(groups)) < self.n_splits:
            raise DataError(f"{len(y)} rows form only {len(np.unique(groups))} leakage groups, too few for "
                            f"{self.n_splits} folds; lower --cv-folds or add data.")
        fold = iterative_fold_ids(y, groups, [1.0] * self.n_splits, self.seed)
        for k in range(self.n_splits):
            yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)


def warn_thin_labels(y: np.ndarray, labels: Sequence[str], where: str, minimum: int) -> None:
    """Multi-label: warn, naming each label, when ``where`` has fewer than ``minimum`` rows of it."""
    counts = y.sum(axis=0)
    thin = [f"{labels[j]!r} ({int(counts[j])} row{'' if counts[j] == 1 else 's'})" for j in range(len(labels))
            if counts[j] < minimum]
    if thin:
        logger.warning("%s has fewer than %d rows of label %s: its per-label scores there will be noisy or "
                       "undefined; add rows with %s, or merge %s into another label.", where, minimum,
                       ", ".join(thin), "it" if len(thin) == 1 else "them", "it" if len(thin) == 1 else "them")
