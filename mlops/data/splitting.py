"""Leakage-safe stratified splitters and the split plan of an experiment.

Rows whose normalised text is identical, and rows sharing a ``--group-column`` value, form one
leakage group; a group never straddles two sides of any split. Splitters follow scikit-learn's
``split(X, y, groups) -> Iterator[(train_idx, test_idx)]`` protocol and delegate to
``StratifiedShuffleSplit``/``StratifiedKFold`` when every group is a single row and to
``grouped_fold_ids`` (multi-row groups placed one by one, single rows in bulk) otherwise.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlops.core.choices import BacktestingStrategy, NearDuplicates
from mlops.core.errors import DataError
from mlops.data.label_set_splits import MultilabelFolds, MultilabelHoldout, warn_thin_labels

logger = logging.getLogger(__name__)

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The form under which two texts count as duplicates: NFKC, case-folded, whitespace collapsed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", str(text)).casefold()).strip()


def leakage_groups(
    texts: Sequence[str], text_pairs: Sequence[str] | None = None, groups: Sequence[object] | None = None,
    linked_pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Integer group per row: connected components of 'same normalised text', 'same group value' and, when
    given, ``linked_pairs`` (two arrays of row positions, e.g. near-duplicates)."""
    import pandas as pd
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = [normalise_text(t) for t in texts]
    if text_pairs is not None:
        keys = [f"{a}\x1f{normalise_text(b)}" for a, b in zip(keys, text_pairs, strict=True)]
    text_codes, _ = pd.factorize(pd.Series(keys, dtype=object))
    if groups is None and linked_pairs is None:
        return text_codes.astype(np.int64)
    group_codes = (pd.factorize(pd.Series(list(groups), dtype=object))[0] if groups is not None
                   else np.empty(0, dtype=np.int64))
    n = len(keys)
    n_text = int(text_codes.max()) + 1 if n else 0
    # Bipartite graph rows <-> (text keys, group keys), plus row-row links; components are the leakage groups.
    rows = [np.arange(n)]
    cols = [n + text_codes]
    if groups is not None:
        rows.append(np.arange(n))
        cols.append(n + n_text + group_codes)
    if linked_pairs is not None:
        rows.append(np.asarray(linked_pairs[0], dtype=np.int64))
        cols.append(np.asarray(linked_pairs[1], dtype=np.int64))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    size = n + n_text + (int(group_codes.max()) + 1 if len(group_codes) else 0)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    return pd.factorize(component[:n])[0].astype(np.int64)


def _split_inputs(y: Sequence, groups: Sequence | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and groups as arrays (no groups: one per row), and the X placeholder sklearn splitters take."""
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    return y, groups, np.zeros(len(y))


def _all_singletons(groups: np.ndarray) -> bool:
    return len(np.unique(groups)) == len(groups)


def grouped_fold_ids(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """A fold id per row: every group inside one fold, each class spread evenly over the folds.

    The multi-row groups go first, largest first (ties in a seeded random order), each to the fold where it
    adds least to the squared distance of the folds' class counts from their targets (a class's rows / K);
    then each class's single-row groups fill the folds' remaining room for that class, in bulk (largest
    remainders), in a seeded random order. Python loops only over the multi-row groups, so data with few
    duplicates splits about as fast as data with none (scikit-learn's StratifiedGroupKFold loops over every
    group and fold).
    """
    rng = np.random.default_rng(seed)
    classes, y_codes = np.unique(y, return_inverse=True)
    _, group_codes = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_codes)
    target = np.bincount(y_codes, minlength=len(classes)) / n_splits
    counts = np.zeros((n_splits, len(classes)))
    fold = np.full(len(y), -1, dtype=np.int64)
    in_multi = sizes[group_codes] > 1
    if in_multi.any():
        multi_rows = np.flatnonzero(in_multi)
        multi_groups, local = np.unique(group_codes[multi_rows], return_inverse=True)
        per_group = np.zeros((len(multi_groups), len(classes)))
        np.add.at(per_group, (local, y_codes[multi_rows]), 1)
        order = rng.permutation(len(multi_groups))
        order = order[np.argsort(-per_group.sum(axis=1)[order], kind="stable")]
        chosen = np.empty(len(multi_groups), dtype=np.int64)
        for g in order:  # the cheapest fold; among equals, the one with the fewest rows
            cost = ((counts + per_group[g] - target) ** 2).sum(axis=1) - ((counts - target) ** 2).sum(axis=1)
            chosen[g] = int(np.lexsort((counts.sum(axis=1), np.round(cost, 9)))[0])
            counts[chosen[g]] += per_group[g]
        fold[multi_rows] = chosen[local]
    for c in range(len(classes)):
        rows = np.flatnonzero(~in_multi & (y_codes == c))
        if not len(rows):
            continue
        rows = rows[rng.permutation(len(rows))]
        room = np.clip(target[c] - counts[:, c], 0, None)
        share = room / room.sum() * len(rows) if room.sum() > 0 else np.full(n_splits, len(rows) / n_splits)
        take = np.floor(share).astype(np.int64)
        take[np.argsort(-(share - take), kind="stable")[: len(rows) - take.sum()]] += 1
        fold[rows] = np.repeat(np.arange(n_splits), take)
        counts[:, c] += take
    return fold


def _grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(f"{len(y)} rows form only {n_groups} leakage groups (rows sharing a normalised text or a "
                        f"--group-column value), too few for {n_splits} folds; lower --cv-folds or add data.")
    fold = grouped_fold_ids(y, groups, n_splits, seed)
    for k in range(n_splits):
        yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)


class TrainSideTooSmall(ValueError):
    """The split's larger side would lack a row of some class (the split's share is too large for the data)."""


class StratifiedGroupHoldout:
    """One stratified (train, test) split that keeps every group on one side."""

    def __init__(self, test_size: float, seed: int = 42) -> None:
        if not 0.0 < test_size < 1.0:
            raise DataError(f"a split size must be between 0 and 1 (exclusive), found {test_size}.")
        self.test_size = test_size
        self.seed = seed

    def split(self, X: Sequence, y: Sequence, groups: Sequence | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedShuffleSplit

        y, groups, placeholder = _split_inputs(y, groups)
        if _all_singletons(groups):
            # Small inputs: at least one row per class on each side, so stratification is possible.
            n_classes = len(np.unique(y))
            n_test = max(round(self.test_size * len(y)), n_classes)
            if len(y) - n_test < n_classes:
                raise TrainSideTooSmall(f"a share of {self.test_size:g} of {len(y)} rows leaves {len(y) - n_test} for "
                                        f"the other side, fewer than one per class ({n_classes}).")
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=self.seed)
            yield next(splitter.split(placeholder, y))
            return
        # The first of round(1/size) grouped folds; tiny classes cap the fold count (a larger test share).
        smallest_class = int(np.unique(y, return_counts=True)[1].min())
        n_splits = max(2, min(round(1.0 / self.test_size), smallest_class))
        train, test = next(_grouped_splits(y, groups, n_splits, self.seed))
        if n_splits != 1.0 / self.test_size:
            logger.info("grouped split: test fraction %.3f (1/%d) for a requested %.3f", len(test) / len(y),
                        n_splits, self.test_size)
        yield train, test


class StratifiedGroupFolds:
    """K stratified folds that keep every group inside one fold."""

    def __init__(self, n_splits: int, seed: int = 42) -> None:
        if n_splits < 2:
            raise DataError(f"--cv-folds must be at least 2, found {n_splits}.")
        self.n_splits = n_splits
        self.seed = seed

    def split(self, X: Sequence, y: Sequence, groups: Sequence | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedKFold

        y, groups, placeholder = _split_inputs(y, groups)
        if _all_singletons(groups):
            yield from StratifiedKFold(self.n_splits, shuffle=True, random_state=self.seed).split(placeholder, y)
        else:
            yield from _grouped_splits(y, groups, self.n_splits, self.seed)


@dataclass(frozen=True)
class SplitParameters:
    test_size: float = 0.2
    backtesting_strategy: BacktestingStrategy = BacktestingStrategy.cv
    cv_folds: int = 5
    backtesting_val_size: float = 0.1
    backtesting_test_size: float = 0.2
    perf_estimation_val_size: float = 0.1
    final_model_val_size: float = 0.05
    seed: int = 42
    #: off, minhash or embedding: near-duplicate texts joined into one leakage group (generate-splits
    #: --near-duplicates); recorded only when on, so experiments made without it keep their identity.
    near_duplicates: str = "off"
    near_duplicate_threshold: float | None = None

    def validate(self) -> None:
        for name in ("test_size", "backtesting_val_size", "backtesting_test_size", "perf_estimation_val_size",
                     "final_model_val_size"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                option = "--" + name.replace("_", "-")
                raise DataError(f"{option} must be between 0 and 1 (exclusive), found {value}.")
        if self.backtesting_strategy is BacktestingStrategy.cv and self.cv_folds < 2:
            raise DataError(f"--cv-folds must be at least 2, found {self.cv_folds}.")
        if self.near_duplicates not in NEAR_DUPLICATE_METHODS:
            raise DataError(f"--near-duplicates must be one of {', '.join(NEAR_DUPLICATE_METHODS)}, found "
                            f"{self.near_duplicates!r}.")

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["backtesting_strategy"] = self.backtesting_strategy.value
        if self.near_duplicates == "off":
            del data["near_duplicates"], data["near_duplicate_threshold"]
        return data


NEAR_DUPLICATE_METHODS = tuple(method.value for method in NearDuplicates)


@dataclass
class Fold:
    """Positions (into the experiment's usable rows) of one train/val/test assignment."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass
class SplitPlan:
    holdout_test: np.ndarray
    train_val: np.ndarray
    backtesting: list[Fold]
    performance_estimation: Fold
    final_model: Fold


def _class_counts(y: np.ndarray) -> dict[str, int]:
    if y.ndim == 2:  # label sets: rows per label column
        return {str(j): int(c) for j, c in enumerate(y.sum(axis=0))}
    values, counts = np.unique(y, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def _split_subset(
    positions: np.ndarray, y: np.ndarray, groups: np.ndarray, splitter, what: str, option: str
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a holdout splitter to ``positions`` and map the result back to positions."""
    try:
        train, test = next(splitter.split(positions, y[positions], groups[positions]))
    except ValueError as exc:
        counts = _class_counts(y[positions])
        size = splitter.test_size
        if isinstance(exc, TrainSideTooSmall) and size > 0.5:
            fix = f"Use a smaller {option} (found {size:g}; 0.2 is usual) so both sides keep a row of every class."
        elif isinstance(exc, TrainSideTooSmall):
            fix = "Add data for the smallest class: both sides of the split need a row of every class."
        else:
            fix = f"Use a larger {option} (found {size:g}) or more data per class."
        raise DataError(
            f"cannot make the {what} split from {len(positions)} rows with class counts {counts}: {exc} {fix}"
        ) from None
    return np.sort(positions[train]), np.sort(positions[test])


def _check_min_per_class(y: np.ndarray, minimum: int, what: str, fix: str) -> None:
    counts = _class_counts(y)
    small = {label: n for label, n in counts.items() if n < minimum}
    if small:
        raise DataError(
            f"{what} needs at least {minimum} rows per class, but {', '.join(f'{k!r} has {v}' for k, v in small.items())}. "
            f"{fix}"
        )


#: Fewer hold-out rows of a class than this and its estimate is mostly noise (generate-splits warns).
MIN_HOLDOUT_ROWS_PER_CLASS = 10


def _warn_small_holdout(y: np.ndarray, holdout_y: np.ndarray, test_size: float) -> None:
    """Warn, naming each class, its hold-out count and the --test-size that would give it enough rows."""
    total, held = _class_counts(y), _class_counts(holdout_y)
    small = {label: held.get(label, 0) for label in total if held.get(label, 0) < MIN_HOLDOUT_ROWS_PER_CLASS}
    if not small:
        return
    needed = max(math.ceil(MIN_HOLDOUT_ROWS_PER_CLASS / total[label] * 100) / 100 for label in small)
    minimum = MIN_HOLDOUT_ROWS_PER_CLASS
    fix = (f"use --test-size {needed:.2f} or more (found {test_size:g})" if needed <= 0.5 else
           f"add data for {'that class' if len(small) == 1 else 'those classes'}: about "
           f"{math.ceil(minimum / test_size)} rows of a class put {minimum} in a hold-out of --test-size {test_size:g}")
    logger.warning(
        "the global hold-out has fewer than %d rows of %s, so the estimate on it will be noisy (see its 95%% "
        "interval); %s.", MIN_HOLDOUT_ROWS_PER_CLASS,
        ", ".join(f"class {label!r} ({n} row{'' if n == 1 else 's'})" for label, n in small.items()), fix)


def build_split_plan(y: Sequence[str] | np.ndarray, groups: np.ndarray, params: SplitParameters, *,
                     labels: Sequence[str] | None = None) -> SplitPlan:
    """Hold-out first, then the backtesting folds, the estimate and the final-model split. ``y`` is one class
    per row, or for a multi-label task a (rows, labels) 0/1 matrix whose columns are ``labels``: split by
    iterative stratification, with a warning (not an error) for a label too rare to score."""
    params.validate()
    multi = isinstance(y, np.ndarray) and y.ndim == 2
    y = np.asarray(y, dtype=np.int8 if multi else object)
    groups = np.asarray(groups)
    every = np.arange(len(y))
    if multi:
        holdout_splitter, fold_splitter = MultilabelHoldout, MultilabelFolds
        names = list(labels) if labels is not None else [str(j) for j in range(y.shape[1])]
    else:
        holdout_splitter, fold_splitter = StratifiedGroupHoldout, StratifiedGroupFolds
        _check_min_per_class(y, 2, "a stratified split", "Add rows for that class or remove it from the data.")
    seed = params.seed
    train_val, holdout = _split_subset(every, y, groups, holdout_splitter(params.test_size, seed), "hold-out",
                                       "--test-size")
    if multi:
        warn_thin_labels(y[holdout], names, "the global hold-out", MIN_HOLDOUT_ROWS_PER_CLASS)
    else:
        _warn_small_holdout(y, y[holdout], params.test_size)

    folds: list[Fold] = []
    if params.backtesting_strategy is BacktestingStrategy.cv:
        if not multi:
            _check_min_per_class(
                y[train_val], params.cv_folds, f"{params.cv_folds}-fold backtesting",
                "Lower --cv-folds, use --backtesting-strategy train-val, or add data for that class.",
            )
        splitter = fold_splitter(params.cv_folds, seed)
        for k, (rest, test) in enumerate(splitter.split(train_val, y[train_val], groups[train_val])):
            rest_positions, test_positions = train_val[rest], np.sort(train_val[test])
            train, val = _split_subset(rest_positions, y, groups,
                                       holdout_splitter(params.backtesting_val_size, seed + k + 1),
                                       f"fold {k} train/val", "--backtesting-val-size")
            folds.append(Fold(train=train, val=val, test=test_positions))
            if multi:
                warn_thin_labels(y[test_positions], names, f"the test rows of backtesting fold {k + 1}", 2)
    else:
        rest, test = _split_subset(train_val, y, groups, holdout_splitter(params.backtesting_test_size, seed + 1),
                                   "backtesting train-val/test", "--backtesting-test-size")
        train, val = _split_subset(rest, y, groups, holdout_splitter(params.backtesting_val_size, seed + 2),
                                   "backtesting train/val", "--backtesting-val-size")
        folds.append(Fold(train=train, val=val, test=test))

    est_train, est_val = _split_subset(train_val, y, groups,
                                       holdout_splitter(params.perf_estimation_val_size, seed + 101),
                                       "performance-estimation train/val", "--perf-estimation-val-size")
    final_train, final_val = _split_subset(every, y, groups,
                                           holdout_splitter(params.final_model_val_size, seed + 202),
                                           "final-model train/val", "--final-model-val-size")
    return SplitPlan(
        holdout_test=holdout,
        train_val=train_val,
        backtesting=folds,
        performance_estimation=Fold(train=est_train, val=est_val, test=holdout),
        final_model=Fold(train=final_train, val=final_val),
    )
