"""learning-curve, suggest-labels and active-learning-sim: nested stratified subsets, each strategy's ranking on a
crafted pool, streaming, the simulation's bookkeeping, and that no val or test row is trained on or ranked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops.labelling.curve import fit_curve, nested_per_class, nested_subsets, power_law
from mlops.labelling.strategies import random_keys, select, uncertainty
from tests.helpers.built import built_rows, write_built_csv
from tests.helpers.cli import assert_clean_failure, generate_splits


def test_nested_subsets_are_nested_stratified_and_seeded():
    y = np.array(["a"] * 300 + ["b"] * 100 + ["c"] * 7)
    fractions = [0.1, 0.25, 0.5, 1.0]
    subsets = nested_subsets(y, fractions, seed=3)
    again = nested_subsets(y, fractions, seed=3)
    assert all(np.array_equal(subsets[f], again[f]) for f in fractions)
    for small, large in zip(fractions, fractions[1:]):
        assert set(subsets[small]) <= set(subsets[large])
    for fraction in fractions:
        picked = y[subsets[fraction]]
        for label, total in (("a", 300), ("b", 100), ("c", 7)):
            assert abs((picked == label).sum() - fraction * total) <= 1
            assert (picked == label).sum() >= 1
    assert len(subsets[1.0]) == len(y)
    assert not np.array_equal(subsets[0.5], nested_subsets(y, fractions, seed=4)[0.5])


def test_per_class_subsets_are_nested_balanced_and_share_the_fraction_order():
    y = np.array(["a"] * 300 + ["b"] * 100 + ["c"] * 7)
    subsets = nested_per_class(y, [16, 2, 8], seed=3)
    assert list(subsets) == [2, 8, 16]
    for small, large in ((2, 8), (8, 16)):
        assert set(subsets[small]) <= set(subsets[large])
    assert [int((y[subsets[8]] == label).sum()) for label in "abc"] == [8, 8, 7]  # c has only 7
    assert [int((y[subsets[16]] == label).sum()) for label in "abc"] == [16, 16, 7]
    # the same seeded order per class as the fractions: 8 per class of "b" are the first rows a fraction takes
    b_rows = np.flatnonzero(y == "b")
    assert set(subsets[8]) & set(b_rows) <= set(nested_subsets(y, [0.1], seed=3)[0.1])


def test_power_law_fit_recovers_a_known_curve():
    rows = np.repeat([100, 200, 400, 800, 1600], 3).astype(float)
    scores = power_law(rows, 0.9, 2.0, 0.5) + np.random.default_rng(0).normal(0, 0.002, len(rows))
    fitted = fit_curve(rows, scores)
    assert fitted is not None
    assert abs(fitted(3200) - power_law(3200, 0.9, 2.0, 0.5)) < 0.01


def test_strategies_rank_a_crafted_pool():
    proba = np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.5, 0.5, 0.0], [0.6, 0.2, 0.2], [0.9, 0.1, 0.0]])
    assert select(proba, 1, "entropy")[0] == 1
    assert list(select(proba, 2, "margin")) == [2, 1]  # no lead, then a 0.01 lead
    assert select(proba, 1, "least-confidence")[0] == 1
    assert uncertainty(proba, "margin")[2] == pytest.approx(1.0)
    assert np.array_equal(select(proba, 3, "random", seed=1), select(proba, 3, "random", seed=1))
    # a random key belongs to a row's position, whatever the chunk it is read in
    assert np.array_equal(random_keys(10, 5)[6:], random_keys(4, 5, offset=6))


def test_diverse_spreads_a_batch_over_clusters():
    hard_a = [f"refund for order number {i} please" for i in range(12)]  # one kind of hard case, many copies
    hard_b = ["the screen flickers at night", "battery drains when idle", "app crashes on login"]
    texts = hard_a + hard_b
    proba = np.array([[0.5, 0.5]] * 12 + [[0.55, 0.45]] * 3)
    entropy = select(proba, 4, "entropy", texts=texts)
    diverse = select(proba, 4, "diverse", texts=texts)
    assert all(i < 12 for i in entropy)  # the copies win on uncertainty alone
    assert any(i >= 12 for i in diverse)


@pytest.fixture
def built_csv(tmp_path):
    return write_built_csv(tmp_path / "built.csv", 300)


def _spy(monkeypatch, module, calls):
    real = module.fit_and_predict

    def spy(named, train, val, test, labels, context):
        calls.append((set(train.texts), set(val.texts) if val is not None else set(), set(test.texts)))
        return real(named, train, val, test, labels, context)

    monkeypatch.setattr(module, "fit_and_predict", spy)


def _fold_texts(artifacts, experiment_id, path):
    from mlops.experiments.service import ExperimentService

    experiment = ExperimentService(artifacts).load_experiment(experiment_id)
    texts = pd.read_csv(path)["text"].to_numpy()
    holdout = set(texts[experiment.plan.holdout_test])
    return [(set(texts[f.train]), set(texts[f.val]), set(texts[f.test])) for f in experiment.plan.backtesting], holdout


def test_learning_curve_trains_on_subsets_of_fold_training_rows(cli, artifacts, built_csv, monkeypatch):
    import mlops.labelling.service as module

    generate_splits(cli, "lc", built_csv, folds=3, seed=0)
    calls = []
    _spy(monkeypatch, module, calls)
    result = cli("learning-curve", "--experiment-id", "lc", "--fractions", "0.25", "--fractions", "0.5",
                 "--fractions", "1.0")
    assert "doubling the labels" in result.output
    folds, holdout = _fold_texts(artifacts, "lc", built_csv)
    assert len(calls) == 9
    for i, (train, val, test) in enumerate(calls):
        fold_train, fold_val, fold_test = folds[i // 3]
        assert train <= fold_train and val == fold_val and test == fold_test
        assert not train & holdout
    sizes = [len(c[0]) for c in calls[:3]]
    assert sizes[0] < sizes[1] < sizes[2] == len(folds[0][0])
    folder = artifacts / "experiments" / "lc" / "learning_curve" / "tfidf_logreg"
    summary = json.loads((folder / "summary.json").read_text())
    assert [p["fraction"] for p in summary["per_fraction"]] == [0.25, 0.5, 1.0]
    assert (folder / "curve.png").stat().st_size > 1000
    again = cli("learning-curve", "--experiment-id", "lc", "--fractions", "0.25", "--fractions", "0.5",
                "--fractions", "1.0")
    assert "Reused 9" in again.output and len(calls) == 9
    few = cli("learning-curve", "--experiment-id", "lc", "--per-class", "4", "--per-class", "16", "--force")
    assert "per class" in few.output and len(calls) == 15
    for train, _, _ in calls[9:11]:
        assert len(train) in (4 * 3, 16 * 3)  # three balanced classes
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sizes"] == "per_class" and [p["per_class"] for p in summary["per_fraction"]] == [4, 16]
    both = cli("learning-curve", "--experiment-id", "lc", "--per-class", "4", "--fractions", "0.5", expect=None)
    assert_clean_failure(both, "not both")
    cli("run-backtesting", "--experiment-id", "lc", "--model-config-name", "tfidf_logreg")
    cli("report", "--experiment-id", "lc")
    html = (artifacts / "experiments" / "lc" / "reports" / "report.html").read_text()
    assert "Labels: learning curves and active learning" in html and "doubling the labelled rows" in html


def test_active_learning_simulation_bookkeeping(cli, artifacts, built_csv, monkeypatch):
    import mlops.labelling.simulation as module

    generate_splits(cli, "al", built_csv, folds=3, seed=0)
    calls = []
    _spy(monkeypatch, module, calls)
    cli("active-learning-sim", "--experiment-id", "al", "--model-config-name", "tfidf_logreg", "--strategy", "entropy",
        "--initial", "12", "--batch", "10", "--rounds", "2")
    folds, holdout = _fold_texts(artifacts, "al", built_csv)
    assert len(calls) == 2 * 3 * 3  # (entropy, random) x folds x (rounds + 1)
    summary = json.loads((artifacts / "experiments" / "al" / "active_learning" / "tfidf_logreg" /
                          "summary.json").read_text())
    rounds = pd.DataFrame(summary["rounds"])
    for (strategy, fold), group in rounds.groupby(["strategy", "fold"]):
        assert list(group["labelled"].diff().dropna()) == [10, 10]
    starts = {}
    for i, (train, val, test) in enumerate(calls):
        fold, r = (i % 9) // 3, i % 3  # calls run strategy by strategy, fold by fold, round by round
        fold_train, fold_val, fold_test = folds[fold]
        assert train <= fold_train and val == fold_val and test == fold_test and not train & holdout
        if r == 0:
            starts.setdefault(fold, []).append(train)
    assert all(a == b for a, b in starts.values())  # every strategy starts from the same labelled rows
    assert set(summary["outcome"]) == {"entropy", "random"}


def test_suggest_labels_streams_and_refuses_to_overwrite(cli, artifacts, built_csv, tmp_path):
    generate_splits(cli, "sg", built_csv, folds=2, seed=0)
    model_dir = tmp_path / "model"
    cli("train-final-model", "--experiment-id", "sg", "--model-config-name", "tfidf_logreg",
        "--model-output-dir", str(model_dir))
    pool = tmp_path / "pool.csv"
    texts, _, _ = built_rows(120, labels=("negative", "neutral", "positive"), flip=0, seed=9)
    pd.DataFrame({"id": range(120), "text": texts}).to_csv(pool, index=False)
    out = tmp_path / "suggested.csv"
    cli("suggest-labels", "--model-path", str(model_dir), "--input-file", str(pool), "--output-file", str(out),
        "--n", "15", "--strategy", "margin")
    first = pd.read_csv(out)
    assert len(first) == 15 and list(first["rank"]) == list(range(1, 16))
    assert {"pool_row", "id", "text", "score", "predicted_label"} <= set(first.columns)
    assert first["score"].is_monotonic_decreasing
    refused = cli("suggest-labels", "--model-path", str(model_dir), "--input-file", str(pool), "--output-file",
                  str(out), "--n", "15", expect=None)
    assert_clean_failure(refused, "already exists", "--force")
    from mlops.app import Application
    from mlops.labelling.suggest import suggest_labels

    loaded = Application(artifacts).load_model(model_dir)
    for strategy in ("margin", "random", "diverse"):
        whole, chunked = tmp_path / f"{strategy}_a.csv", tmp_path / f"{strategy}_b.csv"
        suggest_labels(loaded, pool, whole, n=15, strategy=strategy, chunk_rows=1000, seed=3)
        suggest_labels(loaded, pool, chunked, n=15, strategy=strategy, chunk_rows=7, seed=3)
        assert set(pd.read_csv(whole)["pool_row"]) == set(pd.read_csv(chunked)["pool_row"]), strategy
