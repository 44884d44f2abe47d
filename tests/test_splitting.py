"""Property tests of the split plan: disjointness, coverage, no leakage, stratification."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops.core.errors import DataError
from mlops.data.splitting import (BacktestingStrategy, SplitParameters, build_split_plan, leakage_groups,
                                  normalise_text)


@st.composite
def labelled_rows(draw, with_duplicates: bool = True, with_groups: bool = False):
    n_classes = draw(st.integers(2, 4))
    per_class = draw(st.lists(st.integers(12, 40), min_size=n_classes, max_size=n_classes))
    labels = [f"c{k}" for k, n in enumerate(per_class) for _ in range(n)]
    texts = [f"text number {i}" for i in range(len(labels))]
    if with_duplicates:
        n_dups = draw(st.integers(0, len(labels) // 5))
        for _ in range(n_dups):
            i, j = draw(st.integers(0, len(labels) - 1)), draw(st.integers(0, len(labels) - 1))
            texts[j] = "  " + texts[i].upper() + " "  # same normalised text
    groups = None
    if with_groups:
        groups = [f"user{draw(st.integers(0, len(labels) // 3))}" for _ in labels]
    seed = draw(st.integers(0, 10_000))
    return np.asarray(labels, dtype=object), texts, groups, seed


def _parts(plan):
    yield "holdout", plan.train_val, plan.holdout_test
    for k, fold in enumerate(plan.backtesting):
        yield f"fold{k}", np.concatenate([fold.train, fold.val]), fold.test
        yield f"fold{k}-val", fold.train, fold.val
    yield "estimate", plan.performance_estimation.train, plan.performance_estimation.val
    yield "final", plan.final_model.train, plan.final_model.val


def _assert_no_straddling(plan, groups):
    for name, left, right in _parts(plan):
        assert not set(groups[left]) & set(groups[right]), f"a leakage group straddles {name}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled_rows(with_duplicates=True, with_groups=False), st.sampled_from(list(BacktestingStrategy)))
def test_plan_is_disjoint_covering_and_leak_free(rows, strategy):
    y, texts, _, seed = rows
    groups = leakage_groups(texts)
    params = SplitParameters(cv_folds=3, backtesting_strategy=strategy, seed=seed)
    plan = build_split_plan(y, groups, params)
    n = len(y)
    # hold-out and train-val partition every row
    assert sorted(np.concatenate([plan.train_val, plan.holdout_test]).tolist()) == list(range(n))
    holdout = set(plan.holdout_test.tolist())
    for fold in plan.backtesting:
        parts = [set(fold.train.tolist()), set(fold.val.tolist()), set(fold.test.tolist())]
        assert all(parts), "every part of a fold has rows"
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(plan.train_val.tolist())
        assert not set().union(*parts) & holdout, "the hold-out never enters a fold"
    if strategy is BacktestingStrategy.cv:
        tests = np.concatenate([f.test for f in plan.backtesting])
        assert sorted(tests.tolist()) == sorted(plan.train_val.tolist()), "test folds cover train-val exactly once"
    estimate = plan.performance_estimation
    assert set(estimate.train.tolist()) | set(estimate.val.tolist()) == set(plan.train_val.tolist())
    assert estimate.test.tolist() == plan.holdout_test.tolist()
    final = plan.final_model
    assert sorted(np.concatenate([final.train, final.val]).tolist()) == list(range(n))
    _assert_no_straddling(plan, groups)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled_rows(with_duplicates=False, with_groups=True))
def test_groups_never_straddle(rows):
    y, texts, groups, seed = rows
    components = leakage_groups(texts, groups=groups)
    try:
        plan = build_split_plan(y, components, SplitParameters(cv_folds=3, seed=seed))
    except DataError:
        return  # too few groups for some class: refused with a message, which is correct
    _assert_no_straddling(plan, np.asarray(groups, dtype=object))


@settings(max_examples=40, deadline=None)
@given(labelled_rows(with_duplicates=False))
def test_stratification_within_one_row_per_class(rows):
    y, texts, _, seed = rows
    params = SplitParameters(cv_folds=3, test_size=0.25, seed=seed)
    plan = build_split_plan(y, leakage_groups(texts), params)
    for label in np.unique(y):
        total = int(np.sum(y == label))
        in_holdout = int(np.sum(y[plan.holdout_test] == label))
        assert abs(in_holdout - total * params.test_size) <= 1
        in_folds = [int(np.sum(y[f.test] == label)) for f in plan.backtesting]
        assert max(in_folds) - min(in_folds) <= 1


def test_leakage_groups_join_duplicates_and_groups():
    texts = ["Great  film", "great film", "Bad", "Other", "unique"]
    groups = ["a", "b", "b", "c", "d"]
    components = leakage_groups(texts, groups=groups)
    # rows 0,1 share a text; 1,2 share a group -> 0,1,2 together; 3 and 4 alone
    assert components[0] == components[1] == components[2]
    assert len({components[0], components[3], components[4]}) == 3
    assert normalise_text("  ÉTÉ\tIs   here ") == "été is here"


def test_pairs_are_duplicates_only_if_both_texts_match():
    components = leakage_groups(["a", "a", "a"], text_pairs=["x", "X ", "y"])
    assert components[0] == components[1] != components[2]


def test_same_seed_same_plan_and_other_seed_differs():
    y = np.asarray(["a", "b"] * 50, dtype=object)
    groups = np.arange(100)
    first = build_split_plan(y, groups, SplitParameters(seed=1))
    again = build_split_plan(y, groups, SplitParameters(seed=1))
    other = build_split_plan(y, groups, SplitParameters(seed=2))
    assert first.holdout_test.tolist() == again.holdout_test.tolist()
    assert first.holdout_test.tolist() != other.holdout_test.tolist()


@pytest.mark.parametrize("bad", [dict(test_size=0.0), dict(test_size=1.0), dict(final_model_val_size=1.5),
                                 dict(cv_folds=1)])
def test_invalid_sizes_are_refused(bad):
    y = np.asarray(["a", "b"] * 50, dtype=object)
    with pytest.raises(DataError):
        build_split_plan(y, np.arange(100), SplitParameters(**bad))


def test_class_smaller_than_folds_is_refused_with_counts():
    y = np.asarray(["a"] * 50 + ["b"] * 4, dtype=object)
    with pytest.raises(DataError, match=r"'b' has 3.*--cv-folds"):
        build_split_plan(y, np.arange(len(y)), SplitParameters(cv_folds=5, test_size=0.2))


def test_rows_without_a_group_value_are_not_lumped_together(tmp_path):
    import pandas as pd

    from mlops.data.tables import load_labelled_data

    path = tmp_path / "g.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": ["a", "b"] * 20,
                  "user": ["u1", "u1"] + [""] * 38}).to_csv(path, index=False)
    data = load_labelled_data(path, text_column="text", target_column="label", group_column="user")
    components = leakage_groups(data.frame["text"].tolist(), groups=data.frame["group"].tolist())
    assert len(set(components.tolist())) == 39  # u1's two rows together, every other row alone
