"""Multi-label end to end: reading label sets, iterative stratification (no leakage, per-label balance), the
metrics against scikit-learn, threshold tuning, saving and loading thresholds, every command's multi-label
output, and clear refusals for what does not support label sets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers.hf import multi_topic_data
from mlops.core.multilabel import decide, label_matrix, multi_label_metrics, tune_thresholds
from mlops.data.label_set_splits import iterative_fold_ids
from mlops.data.splitting import SplitParameters, build_split_plan, leakage_groups
from tests.helpers.cli import assert_clean_failure, generate_splits

LABELS = ["food", "sports", "tech"]


def _matrix(n: int, seed: int) -> np.ndarray:
    """Label sets with very different prevalences (50%, 20%, 5%, 2%) and some rows with none."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, 4)) < np.array([0.5, 0.2, 0.05, 0.02])).astype(np.int8)


def test_iterative_folds_keep_groups_whole_and_labels_balanced():
    y = _matrix(600, seed=1)
    groups = np.arange(600) // 3  # groups of three rows
    y = y[groups * 3]  # a group shares its labels (duplicates)
    fold = iterative_fold_ids(y, groups, [1.0] * 5, seed=0)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    expected = y.sum(axis=0) / 5
    per_fold = np.array([y[fold == k].sum(axis=0) for k in range(5)])
    # every label within one group (3 rows) of its share in every fold; a seeded random split of groups is not
    assert np.abs(per_fold - expected).max() <= 3
    rng = np.random.default_rng(0)
    random_fold = rng.integers(0, 5, 200)[groups]
    assert np.abs(np.array([y[random_fold == k].sum(axis=0) for k in range(5)]) - expected).max() > 3
    assert np.array_equal(fold, iterative_fold_ids(y, groups, [1.0] * 5, seed=0))


def test_split_plan_of_label_sets_has_no_leakage():
    y = _matrix(400, seed=2)
    texts = [f"text {i % 350}" for i in range(400)]  # 50 exact duplicates
    groups = leakage_groups(texts)
    plan = build_split_plan(y, groups, SplitParameters(cv_folds=3, seed=4), labels=list("abcd"))
    holdout, train_val = set(plan.holdout_test), set(plan.train_val)
    assert not holdout & train_val and len(holdout | train_val) == 400
    group_of = dict(enumerate(groups))
    assert not {group_of[i] for i in holdout} & {group_of[i] for i in train_val}
    for fold in plan.backtesting:
        parts = [set(fold.train), set(fold.val), set(fold.test)]
        assert all(not a & b for i, a in enumerate(parts) for b in parts[i + 1:])
        assert not set().union(*parts) & holdout
        assert not {group_of[i] for i in fold.train} & {group_of[i] for i in fold.test}
    share = y[plan.holdout_test].sum(axis=0) / y.sum(axis=0)
    assert np.all(np.abs(share[:2] - 0.2) < 0.03)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    rng = np.random.default_rng(3)
    y_true, proba = _matrix(300, seed=3)[:, :3], rng.random((300, 3))
    sets = [tuple(LABELS[j] for j in np.flatnonzero(row)) for row in y_true]
    thresholds = [0.3, 0.5, 0.7]
    metrics = multi_label_metrics(sets, proba, LABELS, thresholds=thresholds)
    y_pred = decide(proba, thresholds)
    for average in ("micro", "macro"):
        assert metrics[f"{average}_f1"] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0))
    assert metrics["samples_f1"] == pytest.approx(f1_score(y_true, y_pred, average="samples", zero_division=1))
    assert metrics["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred))
    assert metrics["per_class"]["tech"]["support"] == int(y_true[:, 2].sum())
    assert metrics["label_cardinality"]["true"] == pytest.approx(y_true.sum(axis=1).mean())
    assert np.array_equal(label_matrix(sets, LABELS), y_true)


def test_thresholds_maximise_each_labels_f1_on_the_rows_given():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0], [1, 0]])
    proba = np.array([[0.9, 0.1], [0.35, 0.2], [0.3, 0.9], [0.1, 0.3], [0.8, 0.4]])
    thresholds = tune_thresholds(y, proba)
    assert 0.3 < thresholds[0] <= 0.35  # between the lowest positive and the highest negative
    assert thresholds[1] == 0.5  # no positive row: the default
    assert decide(proba, thresholds)[:, 0].tolist() == [1, 1, 0, 0, 1]


def test_shrinkage_pulls_rare_labels_towards_the_shared_threshold():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.4, 0.03, 0.0]).astype(int)  # common, rare (a few positives), absent
    proba = np.clip(0.35 * y + rng.random((200, 3)) * 0.6, 0, 1)
    own, shrunk = tune_thresholds(y, proba), tune_thresholds(y, proba, shrinkage=10)
    shared = tune_thresholds(y, proba, shrinkage=float("inf"))
    assert np.all(shared == shared[0])  # one threshold for every label
    grid = np.linspace(0.01, 0.99, 99)  # it is the best for micro-F1 over all labels at once
    best = max(f1_score(y, (proba >= t).astype(int), average="micro", zero_division=0) for t in grid)
    assert f1_score(y, (proba >= shared[0]).astype(int), average="micro", zero_division=0) >= best - 1e-9
    p = y.sum(axis=0)
    for j in (0, 1):
        assert shrunk[j] == pytest.approx((p[j] * own[j] + 10 * shared[0]) / (p[j] + 10))
    assert abs(shrunk[1] - shared[1]) < abs(own[1] - shared[1])  # the rare label moves most
    assert own[2] == 0.5 and shrunk[2] == pytest.approx(shared[0])  # no positive row: the shared threshold


@pytest.fixture
def tagged_csv(tmp_path):
    texts, sets = multi_topic_data(240, seed=0)
    path = tmp_path / "tagged.csv"
    pd.DataFrame({"text": texts, "tags": ["|".join(s) for s in sets]}).to_csv(path, index=False)
    return path


def test_label_sets_read_from_a_separator_or_from_01_columns(cli, artifacts, tagged_csv, tmp_path):
    from mlops.experiments.service import ExperimentService

    frame = pd.read_csv(tagged_csv, keep_default_na=False)
    wide = frame[["text"]].copy()
    for label in LABELS:
        wide[label] = [int(label in tags.split("|")) for tags in frame["tags"]]
    wide_csv = tmp_path / "wide.csv"
    wide.to_csv(wide_csv, index=False)
    generate_splits(cli, "sep", tagged_csv, "--target-column", "tags", "--label-separator", "|",
                    "--allow-empty-labels", folds=3)
    generate_splits(cli, "wide", wide_csv, *[a for label in LABELS for a in ("--target-columns", label)],
                    "--allow-empty-labels", folds=3)
    service = ExperimentService(artifacts)
    a, b = service.load_experiment("sep"), service.load_experiment("wide")
    assert a.labels == b.labels == LABELS and a.task.multi_label
    assert a.info["label_counts"] == b.info["label_counts"] and a.info["rows_without_label"] == 40
    assert np.array_equal(a.plan.holdout_test, b.plan.holdout_test)
    dropped = generate_splits(cli, "drop", tagged_csv, "--target-column", "tags", "--label-separator", "|", folds=3)
    assert "Dropped 40 rows" in dropped.output


def test_bad_multi_label_input_is_refused_clearly(cli, artifacts, tagged_csv, tmp_path):
    both = generate_splits(cli, "x", tagged_csv, "--target-column", "tags", "--label-separator", "|",
                           "--target-columns", "food", expect=None)
    assert_clean_failure(both, "give one of them", artifacts=artifacts)
    lonely = generate_splits(cli, "x", tagged_csv, "--allow-empty-labels", expect=None)
    assert_clean_failure(lonely, "--label-separator or --target-columns", artifacts=artifacts)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f"], "food": ["1", "maybe", "0"], "tech": ["0", "1", "1"]}).to_csv(bad, index=False)
    refused = generate_splits(cli, "x", bad, "--target-columns", "food", "--target-columns", "tech", expect=None)
    assert_clean_failure(refused, "'maybe'", "file line 3", artifacts=artifacts)
    spelled = tmp_path / "spelled.csv"
    texts, sets = multi_topic_data(120, seed=1)
    tags = ["|".join(s).replace("food", "Food") if i % 2 else "|".join(s) for i, s in enumerate(sets)]
    pd.DataFrame({"text": texts, "tags": tags}).to_csv(spelled, index=False)
    case = generate_splits(cli, "x", spelled, "--target-column", "tags", "--label-separator", "|", expect=None)
    assert_clean_failure(case, "--normalize-labels", artifacts=artifacts)


def test_the_lifecycle_on_label_sets(cli, artifacts, tagged_csv, tmp_path):
    generate_splits(cli, "ml", tagged_csv, "--target-column", "tags", "--label-separator", "|", "--allow-empty-labels",
                    folds=3)
    backtest = cli("run-backtesting", "--experiment-id", "ml", "--model-config-name", "tfidf_logreg")
    assert "micro_f1" in backtest.output and "hamming_loss" in backtest.output
    runs = artifacts / "experiments" / "ml" / "runs" / "tfidf_logreg"
    fold = json.loads((runs / "backtesting" / "fold_0" / "metrics.json").read_text())["metrics"]
    assert fold["task"] == "multi_label" and fold["micro_f1"] > 0.8 and len(fold["thresholds"]) == 3
    predictions = pd.read_csv(runs / "backtesting" / "fold_0" / "predictions.csv", keep_default_na=False)
    assert {"predicted_labels", "proba_food", "proba_sports", "proba_tech"} <= set(predictions.columns)
    cli("estimate-performance", "--experiment-id", "ml", "--model-config-name", "tfidf_logreg")
    cli("train-final-model", "--experiment-id", "ml", "--model-config-name", "tfidf_logreg")
    model = runs / "final_model"
    descriptor = json.loads((model / "mlops_model.json").read_text())
    assert descriptor["task"]["type"] == "multi_label" and len(descriptor["task"]["thresholds"]) == 3
    one = cli("predict-new", "--model-path", str(model), "--text", "pasta bread and the football goal")
    assert "food, sports" in one.output
    out = tmp_path / "out.csv"
    cli("predict-new", "--model-path", str(model), "--input-file", str(tagged_csv), "--output-file", str(out))
    written = pd.read_csv(out, keep_default_na=False)
    thresholds = descriptor["task"]["thresholds"]
    expected = ["|".join(label for j, label in enumerate(LABELS) if row[f"proba_{label}"] >= thresholds[j])
                for _, row in written.iterrows()]
    assert written["predicted_labels"].tolist() == expected  # the saved thresholds decide
    scored = cli("evaluate-prediction", "--predictions-file", str(out), "--ground-truth-file", str(tagged_csv),
                 "--target-column", "tags", "--label-separator", "|", "--format", "json")
    assert json.loads(scored.output)["micro_f1"] > 0.9
    compared = cli("compare-models", "--experiment-id", "ml", "--metric", "micro_f1")
    assert "tfidf_logreg" in compared.output
    cli("report", "--experiment-id", "ml")
    images = artifacts / "experiments" / "ml" / "reports" / "images"
    assert (images / "tfidf_logreg_backtesting_co_occurrence.png").is_file()
    for command in ("audit", "learning-curve", "active-learning-sim"):
        refused = cli(command, "--experiment-id", "ml", "--model-config-name", "tfidf_logreg", expect=None)
        assert_clean_failure(refused, "multi-label")
    single = cli("compare-models", "--experiment-id", "ml", "--metric", "samples_f1")
    assert "samples_f1" in single.output


def test_families_without_label_sets_refuse_them(cli, artifacts, tagged_csv):
    generate_splits(cli, "ml", tagged_csv, "--target-column", "tags", "--label-separator", "|", folds=3)
    refused = cli("run-backtesting", "--experiment-id", "ml", "--model-config-name", "ensemble_tfidf_minilm",
                  expect=None)
    assert_clean_failure(refused, "does not support multi-label")
    svm = cli("run-backtesting", "--experiment-id", "ml", "--model-config-name", "tfidf_svm", expect=None)
    assert_clean_failure(svm, "logistic_regression")


def test_the_server_answers_with_label_sets(cli, artifacts, tagged_csv):
    from fastapi.testclient import TestClient

    from mlops.app import Application

    generate_splits(cli, "ml", tagged_csv, "--target-column", "tags", "--label-separator", "|", folds=3)
    cli("train-final-model", "--experiment-id", "ml", "--model-config-name", "tfidf_logreg")
    model = artifacts / "experiments" / "ml" / "runs" / "tfidf_logreg" / "final_model"
    with TestClient(Application(artifacts).serving_app(model)) as client:
        for _ in range(50):
            if client.get("/ready").status_code == 200:
                break
        answer = client.post("/predict", json={"texts": ["cheese soup code laptop", "they said today"]}).json()
        assert answer["predictions"][0]["labels"] == ["food", "tech"]
        assert "label" not in answer["predictions"][0]
        assert set(answer["predictions"][1]["probabilities"]) == set(LABELS)
        assert client.get("/info").json()["task"] == "multi_label"
