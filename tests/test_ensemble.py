"""The ensemble family: Caruana's greedy weights, weights fitted on val rows only (never a fold's test rows),
saving and loading, and the server answering what predict-new writes."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from models.ensemble.model import EnsembleClassifier, greedy_weights
from tests.helpers.built import built_rows, write_built_csv
from tests.helpers.cli import generate_splits

FAST_ENSEMBLE = {"module_path": "models.ensemble.model", "class_name": "EnsembleClassifier",
                 "training_arguments": {"members": ["tfidf_logreg", "tfidf_svm"], "combiner": "greedy"}}


def test_greedy_weights_prefer_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 200)
    weights = greedy_weights([noise, good], y, 25)
    assert weights.sum() == pytest.approx(1.0) and weights[1] > 0.9
    assert np.allclose(greedy_weights([good, good], y, 10), [1.0, 0.0])  # ties go to the earlier member


@pytest.fixture
def built_csv(tmp_path):
    return write_built_csv(tmp_path / "built.csv", 240, flip=10)


def test_weights_are_fitted_on_val_rows_only(cli, artifacts, built_csv, tmp_path, monkeypatch):
    config = tmp_path / "ens.json"
    config.write_text(json.dumps(FAST_ENSEMBLE))
    generate_splits(cli, "ens", built_csv, folds=3, seed=0)
    seen, combined, member_calls = [], [], []
    real_fit, real_combiner = EnsembleClassifier.fit, EnsembleClassifier._fit_combiner
    from models.tfidf_linear.model import TfidfLinearClassifier

    real_predict, real_member_fit = TfidfLinearClassifier.predict_proba, TfidfLinearClassifier.fit
    inside_fit = []  # a member's own fit may score its val rows (for its log); count the ensemble's calls only

    def member_fit(self, *args, **kwargs):
        inside_fit.append(1)
        try:
            return real_member_fit(self, *args, **kwargs)
        finally:
            inside_fit.pop()

    def member_predict(self, data):
        if not inside_fit:
            member_calls.append(len(data))
        return real_predict(self, data)

    monkeypatch.setattr(TfidfLinearClassifier, "fit", member_fit)
    monkeypatch.setattr(TfidfLinearClassifier, "predict_proba", member_predict)

    def spy_fit(self, train, val=None, **kwargs):
        seen.append(set(val.texts))
        return real_fit(self, train, val, **kwargs)

    def spy_combiner(self, probas, val_labels):
        combined.append([len(p) for p in probas] + [len(val_labels)])
        return real_combiner(self, probas, val_labels)

    monkeypatch.setattr(EnsembleClassifier, "fit", spy_fit)
    monkeypatch.setattr(EnsembleClassifier, "_fit_combiner", spy_combiner)
    cli("run-backtesting", "--experiment-id", "ens", "--model-config-name", str(config))
    from mlops.experiments.service import ExperimentService

    experiment = ExperimentService(artifacts).load_experiment("ens")
    texts = pd.read_csv(built_csv)["text"].to_numpy()
    assert len(seen) == 3
    for val_texts, sizes, fold in zip(seen, combined, experiment.plan.backtesting, strict=True):
        assert val_texts == set(texts[fold.val]) and sizes == [len(fold.val)] * 3
        assert not val_texts & set(texts[fold.test]) and not val_texts & set(texts[experiment.plan.holdout_test])
    # each member predicts a fold's val rows once (weights and val_predictions.csv) and its test rows once
    assert sorted(member_calls) == sorted(n for f in experiment.plan.backtesting
                                          for n in (len(f.val), len(f.val), len(f.test), len(f.test)))
    record = json.loads((artifacts / "experiments" / "ens" / "runs" / "ens" / "backtesting" / "fold_0" /
                         "metrics.json").read_text())
    assert set(record["runtime"]["weights"]) == {"tfidf_logreg", "tfidf_svm"}


def _fold_probas(run_dir, name="predictions.csv"):
    frames = [pd.read_csv(path) for path in sorted(run_dir.rglob(name))]
    return [frame[[c for c in frame if c.startswith("proba_")]].to_numpy() for frame in frames]


@pytest.mark.parametrize("combiner", ["greedy", "stacking"])
def test_stored_member_runs_are_reused_with_the_same_result(cli, artifacts, built_csv, tmp_path, monkeypatch,
                                                            combiner):
    """Members backtested and estimated first: the ensemble combines their stored val and test predictions,
    trains nothing, and scores what training the members again gives; a member fold without its stored val
    predictions is trained."""
    arguments = {**FAST_ENSEMBLE["training_arguments"], "combiner": combiner}
    reusing, training = tmp_path / "reusing.json", tmp_path / "training.json"
    reusing.write_text(json.dumps({**FAST_ENSEMBLE, "training_arguments": arguments}))
    training.write_text(json.dumps({**FAST_ENSEMBLE, "training_arguments": {**arguments,
                                                                             "reuse_member_runs": False}}))
    generate_splits(cli, "reuse", built_csv, folds=3, seed=0)
    for command in ("run-backtesting", "estimate-performance"):
        cli(command, "--experiment-id", "reuse", "--model-config-name", "tfidf_logreg", "--model-config-name",
            "tfidf_svm")
    runs = artifacts / "experiments" / "reuse" / "runs"
    assert len(list((runs / "tfidf_svm").rglob("val_predictions.csv"))) == 4  # 3 folds and the estimate

    def no_training(*args, **kwargs):
        raise AssertionError("a member was trained although its stored run matches")

    with monkeypatch.context() as patched:
        patched.setattr(EnsembleClassifier, "fit", no_training)
        for command in ("run-backtesting", "estimate-performance"):
            cli(command, "--experiment-id", "reuse", "--model-config-name", str(reusing))
    for command in ("run-backtesting", "estimate-performance"):
        cli(command, "--experiment-id", "reuse", "--model-config-name", str(training))
    for run_type in ("backtesting", "performance_estimation"):
        got, expected = _fold_probas(runs / "reusing" / run_type), _fold_probas(runs / "training" / run_type)
        assert len(got) == (3 if run_type == "backtesting" else 1)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9)
        for a, b in zip(_fold_probas(runs / "reusing" / run_type, "val_predictions.csv"),
                        _fold_probas(runs / "training" / run_type, "val_predictions.csv"), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9)
    record = json.loads((runs / "reusing" / "backtesting" / "fold_1" / "metrics.json").read_text())
    assert record["runtime"]["members"]["tfidf_svm"]["reused_predictions"] == "runs/tfidf_svm/backtesting/fold_1"
    assert record["metrics"] == json.loads((runs / "training" / "backtesting" / "fold_1" /
                                            "metrics.json").read_text())["metrics"]

    (runs / "tfidf_svm" / "backtesting" / "fold_0" / "val_predictions.csv").unlink()
    trained = []
    real_fit = EnsembleClassifier.fit
    monkeypatch.setattr(EnsembleClassifier, "fit", lambda self, *a, **k: trained.append(1) or real_fit(self, *a, **k))
    result = cli("run-backtesting", "--experiment-id", "reuse", "--model-config-name", str(reusing), "--force")
    assert trained == [1] and "rerun it with --force" in result.output
    for a, b in zip(_fold_probas(runs / "reusing" / "backtesting"), expected_backtest := _fold_probas(
            runs / "training" / "backtesting"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert len(expected_backtest) == 3


@pytest.mark.parametrize("combiner", ["greedy", "stacking"])
def test_saved_ensemble_predicts_the_same(tmp_path, combiner):
    from mlops.core.config import ModelConfig
    from mlops.core.text_dataset import TextDataset

    texts, labels, _ = built_rows(200, labels=("negative", "neutral", "positive"), flip=0)
    config = ModelConfig.model_validate({**FAST_ENSEMBLE, "training_arguments": {
        **FAST_ENSEMBLE["training_arguments"], "combiner": combiner}})
    model = EnsembleClassifier(config).fit(TextDataset(texts[:150], labels[:150]), TextDataset(texts[150:180],
                                                                                              labels[150:180]),
                                           labels=["negative", "neutral", "positive"])
    test = TextDataset(texts[180:])
    before = model.predict_proba(test)
    folder = tmp_path / "saved"
    folder.mkdir()
    model.save(folder)
    after = EnsembleClassifier.load(folder, config).predict_proba(test)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert (before.argmax(1) == [["negative", "neutral", "positive"].index(y) for y in labels[180:]]).mean() > 0.8


@pytest.mark.slow
def test_serve_answers_what_predict_new_writes(cli, artifacts, built_csv, tmp_path):
    from tests.test_serve import Server, _predict_new

    config = tmp_path / "ens.json"
    config.write_text(json.dumps(FAST_ENSEMBLE))
    generate_splits(cli, "ensf", built_csv, folds=2, seed=0)
    model = tmp_path / "model"
    cli("train-final-model", "--experiment-id", "ensf", "--model-config-name", str(config),
        "--model-output-dir", str(model))
    texts = ["superb witty film", "dull boring script", "the cinema screen", "ok"]
    server = Server(model)
    try:
        answer = httpx.post(f"{server.url}/predict", json={"texts": texts}).json()["predictions"]
    finally:
        server.stop()
    expected = _predict_new(model, texts, tmp_path)
    assert [p["label"] for p in answer] == expected["predicted_label"].tolist()
    got = np.array([[p["probabilities"][label] for label in ("negative", "neutral", "positive")] for p in answer])
    np.testing.assert_allclose(got, expected[["proba_negative", "proba_neutral", "proba_positive"]].to_numpy(),
                               atol=1e-6)


def test_a_changed_member_config_makes_the_stored_ensemble_folds_stale(cli, artifacts, built_csv, tmp_path):
    from tests.helpers.cli import assert_clean_failure

    member = tmp_path / "member.json"
    member.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "training_arguments": {"C": 1.0}}))
    ensemble = tmp_path / "ens.json"
    ensemble.write_text(json.dumps({**FAST_ENSEMBLE, "training_arguments": {"members": [str(member), "tfidf_svm"]}}))
    generate_splits(cli, "stale", built_csv, folds=2, seed=0)
    cli("run-backtesting", "--experiment-id", "stale", "--model-config-name", str(ensemble))
    member.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "training_arguments": {"C": 5.0}}))
    refused = cli("run-backtesting", "--experiment-id", "stale", "--model-config-name", str(ensemble),
                  expect=None)
    assert_clean_failure(refused, "parts_sha256", "--force")


def test_a_cluster_executor_is_sent_only_the_folds_that_need_their_members_trained(artifacts, built_csv, caplog,
                                                                                     tmp_path):
    """Under Ray the runner submits an ensemble's folds ahead of its walk: a fold whose members all have stored
    runs is not submitted, and the fold that trains its members says why once, not at planning as well."""
    import logging

    from mlops.app import Application
    from mlops.data.splitting import SplitParameters
    from mlops.executors.local import LocalExecutor
    from mlops.experiments.service import Columns, RunType

    class Recording(LocalExecutor):
        kind = "recording"
        submitted: dict[str, list[int]] = {}

        def submit(self, service, experiment, configs, run_type, pending, device):
            self.submitted.update(pending)

    app = Application(artifacts)
    app.generate_splits("cluster", built_csv, Columns(), SplitParameters(cv_folds=3, seed=0))
    app.run_backtesting("cluster", ["tfidf_logreg", "tfidf_svm"])
    runs = artifacts / "experiments" / "cluster" / "runs"
    (runs / "tfidf_svm" / "backtesting" / "fold_1" / "val_predictions.csv").unlink()
    experiment = app.service.load_experiment("cluster")
    (tmp_path / "ens.json").write_text(json.dumps(FAST_ENSEMBLE))
    named = app.resolve_config("cluster", str(tmp_path / "ens.json"))
    executor = Recording()
    with caplog.at_level(logging.INFO, logger="mlops"):
        app.runner.run(experiment, [named], RunType.backtesting, executor=executor)
    assert executor.submitted == {"ens": [1]}
    said = [r.getMessage() for r in caplog.records if "training its members" in r.getMessage()]
    assert len(said) == 1 and "fold 2" in said[0]
