"""cli tune: search_space validation, an Optuna study that never sees the hold-out, resume, the tuned config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import REVIEW_COLUMNS, generate_splits
from mlops.core.config import ModelConfig, TuningRecord, config_json
from mlops.core.errors import ConfigError
from mlops.core.plugins import resolve
from mlops.data.splitting import normalise_text
from mlops.experiments.service import ExperimentService
from models.tfidf_linear.model import TfidfLinearClassifier

TFIDF_SPACE = {
    "C": {"type": "loguniform", "low": 0.1, "high": 20.0},
    "word_ngram_range": {"type": "categorical", "choices": [[1, 1], [1, 2]]},
    "class_weight": {"type": "categorical", "choices": [None, "balanced"]},
}


def _config(path: Path, space=None, **training_arguments) -> Path:
    path.write_text(json.dumps({
        "module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
        "description": "a small TF-IDF", "training_arguments": {"C": 1.0, "char_ngram_range": None,
                                                                **training_arguments},
        "search_space": TFIDF_SPACE if space is None else space}))
    return path


@pytest.fixture
def experiment(cli, small_csv: Path) -> str:
    generate_splits(cli, "t", small_csv, folds=3, columns=REVIEW_COLUMNS)
    return "t"


@pytest.fixture
def fits(monkeypatch):
    """Every TfidfLinearClassifier.fit call's training and validation texts."""
    calls: list[dict] = []
    real_fit = TfidfLinearClassifier.fit

    def spy(self, train, val=None, **kwargs):
        calls.append({"train": list(train.texts), "val": list(val.texts) if val is not None else [],
                      "arguments": self.training_arguments.model_dump(mode="json")})
        return real_fit(self, train, val, **kwargs)

    monkeypatch.setattr(TfidfLinearClassifier, "fit", spy)
    return calls


def _tune(cli, config: Path, *extra: str, expect: int = 0):
    result = cli("tune", "--experiment-id", "t", "--model-config-name", str(config), "--format", "json", *extra,
                 expect=expect)
    return json.loads(result.stdout) if expect == 0 else result


# --- the search space is checked when the config is loaded --------------------------------------------------


@pytest.mark.parametrize("space, expected", [
    ({"C": {"type": "loguniform", "low": 0.1, "high": 2}, "nonsense": {"type": "int", "low": 1, "high": 3}},
     "not training arguments"),
    ({"min_df": {"type": "int", "low": 0, "high": 3}}, "search_space.min_df: the value 0"),
    ({"classifier": {"type": "categorical", "choices": ["logistic_regression", "forest"]}},
     "search_space.classifier: the value 'forest'"),
    ({"C": {"type": "categorical", "choices": [1.0], "low": 1}}, "search_space.C"),
    ({"C": {"type": "uniform", "low": 2, "high": 1}}, "low must be below high"),
])
def test_a_bad_search_space_is_a_config_error_before_any_training(cli, experiment, tmp_path, fits, space, expected):
    config = _config(tmp_path / "bad.json", space)
    result = _tune(cli, config, "--n-trials", "2", expect=2)
    assert expected in result.output and "bad.json" in result.output
    assert fits == []


def test_the_tfidf_hyperparameter_search_block_still_validates_and_runs():
    root = Path(__file__).resolve().parent.parent
    config = ModelConfig.model_validate(json.loads((root / "model_configs/tfidf_logreg_search.json").read_text()))
    named = resolve(config, name="s", source="s.json")
    assert named.config.hyperparameter_search is not None and named.config.search_space is None
    with pytest.raises(ConfigError, match="hyperparameter_search"):
        resolve(config.model_copy(update={"hyperparameter_search": config.hyperparameter_search.model_copy(
            update={"param_distributions": {"nope": [1]}})}), name="s", source="s.json")


# --- a study ---------------------------------------------------------------------------------------------------


def test_tune_writes_the_best_config_that_other_commands_accept_by_name(cli, experiment, tmp_path, artifacts):
    config = _config(tmp_path / "small.json")
    result = _tune(cli, config, "--n-trials", "5")
    assert [t["state"] for t in result["trials"]] == ["COMPLETE"] * 5
    assert result["trials_run_now"] == 5
    best = max(result["trials"], key=lambda t: t["value"])
    assert result["best_value"] == best["value"] and result["best_params"] == best["params"]
    assert set(result["best_params"]) == set(TFIDF_SPACE)
    path = Path(result["best_config_path"])
    assert path == artifacts / "experiments" / "t" / "tuned" / "small_tuned.json"
    tuned = json.loads(path.read_text())
    for name, value in result["best_params"].items():
        assert tuned["training_arguments"][name] == value
    assert tuned["training_arguments"]["char_ngram_range"] is None  # the rest of the base config is kept
    assert "search_space" not in tuned and "study 'small'" in tuned["description"]
    assert (artifacts / "experiments" / "t" / "tuning" / "small.db").is_file()

    listed = json.loads(cli("list-models", "--format", "json").stdout)
    row = next(r for r in listed if r["name"] == "small_tuned")
    assert row["experiment"] == "t" and "study 'small'" in row["description"]

    cli("run-backtesting", "--experiment-id", "t", "--model-config-name", "small_tuned")
    cli("estimate-performance", "--experiment-id", "t", "--model-config-name", str(path))
    run = json.loads((artifacts / "experiments/t/runs/small_tuned/backtesting/run.json").read_text())
    assert run["config"]["training_arguments"] == tuned["training_arguments"]
    table = cli("tune", "--experiment-id", "t", "--model-config-name", str(config), "--n-trials", "5").output
    assert "Ran 0 trial(s) now" in table and "small_tuned" in table


def test_trials_never_see_the_holdout(cli, experiment, tmp_path, artifacts, fits):
    service = ExperimentService(artifacts)
    loaded = service.load_experiment("t")
    data = service.load_data(loaded)
    holdout = {normalise_text(t) for t in data.frame.loc[loaded.plan.holdout_test, "text"]}
    _tune(cli, _config(tmp_path / "a.json"), "--n-trials", "2")
    _tune(cli, _config(tmp_path / "b.json"), "--n-trials", "2", "--inner-folds", "3")
    assert len(fits) == 2 + 2 * 3
    for call in fits:
        seen = {normalise_text(t) for t in call["train"] + call["val"]}
        assert seen and not seen & holdout
    from mlops.tuning.trial import trial_splits

    for inner in (None, 3):
        splits = trial_splits(loaded, data, inner)
        for train, val in splits:
            assert not set(train) & set(val)
            assert not (set(train) | set(val)) & set(loaded.plan.holdout_test)
            assert set(train) | set(val) <= set(loaded.plan.performance_estimation.train) | set(
                loaded.plan.performance_estimation.val)
        if inner:
            assert sorted(np.concatenate([val for _, val in splits])) == sorted(loaded.plan.performance_estimation.train)


def test_a_resumed_study_runs_only_the_missing_trials(cli, experiment, tmp_path, fits):
    config = _config(tmp_path / "r.json")
    first = _tune(cli, config, "--n-trials", "3")
    assert first["trials_run_now"] == 3 and len(fits) == 3
    again = _tune(cli, config, "--n-trials", "5")
    assert again["trials_run_now"] == 2 and len(fits) == 5, "the 3 finished trials are not rerun"
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3, 4]
    assert again["trials"][:3] == first["trials"]
    params = [json.dumps(t["params"], sort_keys=True) for t in again["trials"]]
    assert len(set(params)) == 5, "a resumed sampler does not redraw the first run's start-up points"


def test_a_study_made_for_another_search_space_is_refused(cli, experiment, tmp_path):
    config = _config(tmp_path / "s.json")
    _tune(cli, config, "--n-trials", "1")
    _config(config, {"C": {"type": "loguniform", "low": 0.5, "high": 2.0}})
    refused = _tune(cli, config, "--n-trials", "2", expect=3)
    assert "config_sha256" in refused.output and "--study-name" in refused.output
    other = _tune(cli, config, "--n-trials", "1", "--study-name", "s2")
    assert other["study_name"] == "s2" and other["trials_run_now"] == 1


def test_a_config_without_search_space_says_how_to_add_one(cli, experiment, tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier"}))
    assert "has no search_space" in _tune(cli, path, expect=2).output


# --- nested tuning: a study per backtesting fold, and an honest backtest of the tuned config ------------------


def _texts(data, rows) -> set[str]:
    return {normalise_text(t) for t in data.frame.loc[rows, "text"]}


def test_nested_tuning_never_sees_a_folds_test_rows_and_its_backtest_uses_each_folds_values(
        cli, experiment, tmp_path, artifacts, fits):
    service = ExperimentService(artifacts)
    loaded = service.load_experiment("t")
    data = service.load_data(loaded)
    holdout = _texts(data, loaded.plan.holdout_test)
    result = _tune(cli, _config(tmp_path / "n.json"), "--n-trials", "2", "--nested")
    assert [f["fold"] for f in result["folds"]] == [0, 1, 2]
    assert [f["study_name"] for f in result["folds"]] == ["n_fold0", "n_fold1", "n_fold2"]
    assert len(fits) == 2 + 3 * 2, "the estimate study, then 2 trials per fold"
    for k, fold in enumerate(loaded.plan.backtesting):
        forbidden = holdout | _texts(data, fold.test)
        for call in fits[2 + 2 * k: 4 + 2 * k]:
            seen = {normalise_text(t) for t in call["train"] + call["val"]}
            assert seen and not seen & forbidden, f"a fold {k} trial saw that fold's test or hold-out rows"
            assert seen <= _texts(data, fold.train) | _texts(data, fold.val)

    tuned = json.loads(Path(result["best_config_path"]).read_text())
    assert result["nested"] is True
    assert tuned["tuning"]["nested"] is True and tuned["tuning"]["study"] == "n"
    per_fold = {int(k): v for k, v in tuned["fold_training_arguments"].items()}
    assert per_fold == {f["fold"]: f["best_params"] for f in result["folds"]}
    fits.clear()
    cli("run-backtesting", "--experiment-id", "t", "--model-config-name", "n_tuned")
    assert len(fits) == 3
    for k, call in enumerate(fits):  # fold k trains with its own study's best values
        for name, value in per_fold[k].items():
            assert call["arguments"][name] == value
    rows = json.loads(cli("compare-models", "--experiment-id", "t", "--format", "json").stdout)
    assert rows[0]["caveat"] is None

    # Fold 1 of the nested backtest is exactly a plain config with fold 1's values, trained on fold 1.
    plain = _config(tmp_path / "fold1_values.json", None, **per_fold[1])
    cli("run-backtesting", "--experiment-id", "t", "--model-config-name", str(plain))
    runs = artifacts / "experiments" / "t" / "runs"
    nested_fold = json.loads((runs / "n_tuned/backtesting/fold_1/metrics.json").read_text())["metrics"]
    plain_fold = json.loads((runs / "fold1_values/backtesting/fold_1/metrics.json").read_text())["metrics"]
    assert nested_fold["macro_f1"] == plain_fold["macro_f1"] and nested_fold["accuracy"] == plain_fold["accuracy"]

    # The same per-fold values on other splits (another experiment, same fold count) are refused.
    generate_splits(cli, "u", loaded.info["input_file"], folds=3, seed=7, columns=REVIEW_COLUMNS)
    refused = cli("run-backtesting", "--experiment-id", "u", "--model-config-name", result["best_config_path"],
                  expect=3)
    assert "tuned on other splits" in refused.output and "experiment 't' vs 'u'" in refused.output
    assert "split parameters" in refused.output


def test_a_backtest_of_a_config_tuned_on_the_same_folds_is_flagged_optimistic(cli, experiment, tmp_path, artifacts):
    _tune(cli, _config(tmp_path / "o.json"), "--n-trials", "2")
    backtest = cli("run-backtesting", "--experiment-id", "t", "--model-config-name", "o_tuned")
    assert "optimistic" in backtest.output
    cli("run-backtesting", "--experiment-id", "t", "--model-config-name", str(_config(tmp_path / "p.json")))
    rows = {r["model"]: r for r in json.loads(cli("compare-models", "--experiment-id", "t", "--format",
                                                  "json").stdout)}
    assert "optimistic" in rows["o_tuned"]["caveat"] and "--nested" in rows["o_tuned"]["caveat"]
    assert rows["p"]["caveat"] is None
    assert "o_tuned: optimistic" in cli("compare-models", "--experiment-id", "t").output
    cli("report", "--experiment-id", "t", "--format", "md")
    report = (artifacts / "experiments/t/reports/report.md").read_text()
    assert "o_tuned: optimistic" in report
    estimate = cli("estimate-performance", "--experiment-id", "t", "--model-config-name", "o_tuned")
    assert "optimistic" not in estimate.output, "the hold-out estimate of a tuned config is honest"


def test_per_fold_values_for_other_folds_or_of_the_wrong_type_are_refused(cli, experiment, tmp_path, fits):
    path = _config(tmp_path / "f.json", None)
    config = json.loads(path.read_text())
    config["fold_training_arguments"] = {"0": {"C": 2.0}, "1": {"C": 3.0}}  # the experiment has 3 folds
    path.write_text(json.dumps(config))
    refused = cli("run-backtesting", "--experiment-id", "t", "--model-config-name", str(path), expect=3)
    assert "folds [0, 1] vs this experiment's 3 fold(s)" in refused.output and "--nested" in refused.output
    config["fold_training_arguments"] = {"0": {"C": "lots"}, "1": {}, "2": {}}
    path.write_text(json.dumps(config))
    bad = cli("run-backtesting", "--experiment-id", "t", "--model-config-name", str(path), expect=2)
    assert "fold_training_arguments[0]" in bad.output and "C" in bad.output
    assert fits == []


def test_configs_recorded_before_per_fold_values_keep_their_fingerprints():
    """Runs and studies recorded before fold_training_arguments and tuning existed must still resume."""
    from mlops.core.config import config_fingerprint
    from mlops.tuning.study import search_identity

    config = ModelConfig.model_validate({
        "module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier", "description": "fixed",
        "training_arguments": {"C": 2.0, "class_weight": "auto"},
        "search_space": {"C": {"type": "loguniform", "low": 0.1, "high": 20.0}}})
    # Both printed for this config by the code before those fields existed (commit a79661f).
    assert config_fingerprint(config) == "f49cf373bcc1bb21e7f51f9247b2fb0de5b034be61607272659870c78db57927"
    identity = search_identity({"experiment_id": "e", "input_sha256": "x", "split_parameters": {}},
                               config_json(config), None)  # as TuningService passes it
    assert identity["config_sha256"] == "87959c958b164ef1bc7f5bf5db03d8715916f6ba43a965da0c511082cb5624e6"
    assert "backtesting_fold" not in identity


def test_records_leave_out_unset_later_fields_so_older_versions_still_read_them(tmp_path):
    from mlops.core.model_folder import MODEL_FILE, write_model_descriptor

    config = ModelConfig.model_validate({"module_path": "models.tfidf_linear.model",
                                         "class_name": "TfidfLinearClassifier"})
    write_model_descriptor(tmp_path, "plain", config, ["a", "b"], text_pair=False)
    recorded = json.loads((tmp_path / MODEL_FILE).read_text())["model_config"]
    assert "fold_training_arguments" not in recorded and "tuning" not in recorded
    assert set(recorded) == set(ModelConfig.model_fields) - {"fold_training_arguments", "tuning"}
    tuned = config.model_copy(update={"fold_training_arguments": {0: {"C": 2.0}}, "tuning": TuningRecord(
        study="s", storage="sqlite:///s.db", experiment_id="e")})
    write_model_descriptor(tmp_path, "tuned", tuned, ["a", "b"], text_pair=False)
    recorded = json.loads((tmp_path / MODEL_FILE).read_text())["model_config"]
    assert "fold_training_arguments" not in recorded and "tuning" not in recorded, "loading needs neither"


def test_per_fold_values_count_in_the_backtesting_fingerprint_only():
    from mlops.experiments.service import RunType
    from mlops.core.config import config_fingerprint

    plain = ModelConfig.model_validate({"module_path": "models.tfidf_linear.model",
                                        "class_name": "TfidfLinearClassifier", "training_arguments": {"C": 1.0}})
    per_fold = plain.model_copy(update={"fold_training_arguments": {0: {"C": 2.0}}})
    for run_type in (RunType.performance_estimation, RunType.final_model):
        assert config_fingerprint(per_fold, run_type) == config_fingerprint(plain, run_type)
    assert config_fingerprint(per_fold, RunType.backtesting) != config_fingerprint(plain, RunType.backtesting)


# --- encoders report every epoch to the pruner ------------------------------------------------------------------


def test_an_encoder_trial_is_pruned_from_its_epoch_callback(tmp_path, monkeypatch):
    import optuna
    from helpers.hf import build_tiny_bert, topic_data

    from mlops.data.tables import LabelledData
    from mlops.tuning.trial import TrialSpec, evaluate_trial

    class PruneAfterTwoEpochs(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.last_step is not None and trial.last_step >= 2

    import pandas as pd

    texts, labels = topic_data(90, seed=3)
    data = LabelledData(frame=pd.DataFrame({"text": texts, "label": labels}), labels=sorted(set(labels)))
    config = ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                         model_name=str(build_tiny_bert(tmp_path / "bert")),
                         training_arguments={"epochs": 5, "batch_size": 16, "max_length": 16, "num_threads": 1,
                                             "precision": "fp32", "early_stopping_patience": None},
                         search_space={"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2}})
    spec = TrialSpec(config=config.model_dump(mode="json"), name="tiny", source="tiny.json", allow_external=False,
                     seed=0, device="cpu", labels=sorted(set(labels)),
                     splits=[(np.arange(60), np.arange(60, 90))])
    study = optuna.create_study(direction="maximize", pruner=PruneAfterTwoEpochs())
    study.optimize(lambda trial: evaluate_trial(spec, {"learning_rate": 5e-3}, data, trial)["value"], n_trials=1)
    trial = study.trials[0]
    assert trial.state is optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2], "reported after epochs 1 and 2, stopped before epoch 3"


def test_a_trial_whose_process_died_is_marked_failed_on_resume(cli, experiment, artifacts):
    """kill -9 during a trial leaves it RUNNING in the storage; the next tune marks it FAIL and says so."""
    import socket
    import subprocess
    import sys

    import optuna

    from mlops.tuning.study import OWNER_ATTR, make_storage

    cli("tune", "--experiment-id", experiment, "--model-config-name", "tfidf_logreg", "--n-trials", "1")
    url = "sqlite:///" + str(artifacts / "experiments" / experiment / "tuning" / "tfidf_logreg.db")
    study = optuna.load_study(study_name="tfidf_logreg", storage=make_storage(url))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = study.ask()  # what a killed process leaves: a RUNNING trial owned by a pid that no longer exists
    orphan.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": int(gone.stdout)})
    result = cli("tune", "--experiment-id", experiment, "--model-config-name", "tfidf_logreg", "--n-trials",
                 "2", "--format", "json")
    assert f"trial(s) {orphan.number} were left RUNNING" in " ".join(result.output.split())
    states = {t["number"]: t["state"] for t in json.loads(result.stdout)["trials"]}
    assert states[orphan.number] == "FAIL" and "RUNNING" not in states.values()
    assert list(states.values()).count("COMPLETE") == 2
