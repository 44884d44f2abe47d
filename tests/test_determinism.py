"""Same seed, same numbers: whatever else runs, a resume never mixes folds computed differently, and no view
shows results made on other splits than the experiment's current ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import REVIEW_COLUMNS, assert_clean_failure, generate_splits
from helpers.hf import write_tiny_encoder_config, write_topic_csv



def _fold_records(artifacts: Path, experiment: str, model: str) -> list[dict]:
    run_dir = artifacts / "experiments" / experiment / "runs" / model / "backtesting"
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("fold_*/metrics.json"))]


@pytest.fixture
def busy_process():
    """A process that keeps one core busy, as another user's job would."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield process
    process.kill()
    process.wait()


def test_encoder_metrics_and_thread_count_do_not_change_with_a_busy_process(cli, tmp_path, artifacts, request):
    from models.hf_common.training import available_cores

    data = write_topic_csv(tmp_path / "topics.csv", 150, seed=3)
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert", training_arguments={
        "num_threads": None, "epochs": 2})
    records = []
    for attempt, experiment in enumerate(("idle", "loaded")):
        generate_splits(cli, experiment, data, folds=2)
        if attempt:
            request.getfixturevalue("busy_process")
        cli("run-backtesting", "--experiment-id", experiment, "--model-config-name", str(config))
        records.append(_fold_records(artifacts, experiment, "tiny"))
    for idle, loaded in zip(*records, strict=True):
        assert loaded["metrics"] == idle["metrics"]
        assert [e.get("val_macro_f1") for e in loaded["runtime"]["history"]] == \
            [e.get("val_macro_f1") for e in idle["runtime"]["history"]]
        # The old adaptive default dropped to 1 thread here; the fixed default keeps every core, and says so.
        assert loaded["runtime"]["torch_threads_used"] == [available_cores()]
        assert loaded["identity"]["arithmetic"] == {"device": "cpu", "precision": "fp32",
                                                    "torch_threads": available_cores(), "world_size": 1}
        assert loaded["runtime"]["thread_mode"] == "fixed"


def test_adaptive_threads_are_recorded_as_such_in_the_fold_identity(tmp_path):
    from mlops.core.config import ModelConfig
    from mlops.core.plugins import resolve

    config = json.loads(write_tiny_encoder_config(tmp_path / "t.json", tmp_path / "bert", training_arguments={
        "num_threads": "adaptive"}).read_text())
    named = resolve(ModelConfig.model_validate(config), name="t", source="t.json")
    assert named.model_class.arithmetic(named.arguments, None)["torch_threads"] == "adaptive"
    assert resolve(ModelConfig.model_validate({**config, "training_arguments": {"num_threads": 3}}), name="t",
                   source="t").arguments.num_threads == 3


def test_a_resume_refuses_folds_computed_with_other_arithmetic(cli, small_csv, artifacts):
    generate_splits(cli, "a", small_csv, folds=2, columns=REVIEW_COLUMNS)
    cli("run-backtesting", "--experiment-id", "a", "--model-config-name", "tfidf_logreg")
    path = artifacts / "experiments/a/runs/tfidf_logreg/backtesting/fold_1/metrics.json"
    record = json.loads(path.read_text())
    record["identity"]["arithmetic"] = {"device": "cpu", "precision": "fp32", "torch_threads": 7}
    path.write_text(json.dumps(record))
    result = cli("run-backtesting", "--experiment-id", "a", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, 'arithmetic {"device":"cpu","precision":"fp32","torch_threads":7} -> '
                                 '{"blas_threads":1}', "--force")


def test_folds_recorded_before_identities_carried_the_arithmetic_still_resume(cli, tmp_path, artifacts):
    data = write_topic_csv(tmp_path / "topics.csv", 90, seed=4)
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert", training_arguments={"epochs": 1})
    generate_splits(cli, "old", data, folds=2)
    for model in ("tfidf_logreg", str(config)):
        cli("run-backtesting", "--experiment-id", "old", "--model-config-name", model)
    for path in (artifacts / "experiments/old/runs").glob("*/backtesting/fold_*/metrics.json"):
        record = json.loads(path.read_text())
        del record["identity"]["arithmetic"]  # as an earlier version wrote it
        path.write_text(json.dumps(record))
    for model in ("tfidf_logreg", str(config)):
        result = cli("run-backtesting", "--experiment-id", "old", "--model-config-name", model)
        assert "already complete" in " ".join(result.output.split())
    record_path = next((artifacts / "experiments/old/runs/tiny/backtesting").glob("fold_*/metrics.json"))
    record = json.loads(record_path.read_text())
    record["runtime"]["torch_threads"] = 5  # ... but one trained with other threads is still refused
    record_path.write_text(json.dumps(record))
    result = cli("run-backtesting", "--experiment-id", "old", "--model-config-name", str(config), expect=None)
    assert_clean_failure(result, '"torch_threads":5', "num_threads")


def test_an_interrupted_force_cannot_bring_old_folds_back(cli, small_csv, artifacts, monkeypatch):
    import mlops.executors.local as runner
    from mlops.core.errors import ModelError

    generate_splits(cli, "f", small_csv, folds=3, columns=REVIEW_COLUMNS)
    backtest = ("run-backtesting", "--experiment-id", "f", "--model-config-name", "tfidf_logreg")
    cli(*backtest)
    real, calls = runner.fit_and_predict, []

    def fails_on_the_second_fold(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ModelError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_and_predict", fails_on_the_second_fold)
    assert_clean_failure(cli(*backtest, "--force", expect=None), "interrupted")
    monkeypatch.undo()
    run_dir = artifacts / "experiments/f/runs/tfidf_logreg/backtesting"
    assert sorted(p.name for p in run_dir.glob("fold_*")) == ["fold_0"]  # the old folds 1 and 2 are gone
    cli(*backtest)
    assert json.loads((run_dir / "run.json").read_text())["resumed_folds"] == [0]


def test_runs_on_other_splits_are_marked_stale_or_left_out_in_every_view(cli, small_csv, artifacts):
    generate_splits(cli, "s", small_csv, folds=2, columns=REVIEW_COLUMNS)
    for model in ("tfidf_logreg", "tfidf_svm"):
        cli("run-backtesting", "--experiment-id", "s", "--model-config-name", model)
    cli("estimate-performance", "--experiment-id", "s", "--model-config-name", "tfidf_svm")
    runs = artifacts / "experiments/s/runs"
    for path in [*runs.glob("tfidf_svm/backtesting/fold_*/metrics.json"),
                 runs / "tfidf_svm/performance_estimation/metrics.json"]:
        record = json.loads(path.read_text())
        record["identity"]["split_parameters"]["seed"] = 7  # as if made before a `generate-splits --force --seed 7`
        path.write_text(json.dumps(record))

    rows = {r["model"]: r for r in json.loads(cli("list-experiments", "--format", "json").stdout)}
    assert rows["tfidf_svm"]["stages"] == "backtesting(stale: 2 folds on other splits), estimate(stale: other splits)"
    assert rows["tfidf_svm"]["backtesting_macro_f1"] is None and rows["tfidf_svm"]["holdout_macro_f1"] is None
    assert rows["tfidf_logreg"]["backtesting_macro_f1"] is not None

    result = cli("compare-models", "--experiment-id", "s", "--format", "json")
    assert [r["model"] for r in json.loads(result.stdout)] == ["tfidf_logreg"]
    assert "tfidf_svm: left out" in result.stderr
    result = cli("compare-models", "--experiment-id", "s", "--run-type", "performance_estimation", expect=None)
    assert_clean_failure(result, "no performance_estimation results")

    from mlops.experiments.service import ExperimentService
    from mlops.evaluation.report.collect import collect

    view = collect(ExperimentService(artifacts), "s")
    assert [(m.name, m.backtesting is not None, m.holdout is not None) for m in view.models] == [
        ("tfidf_logreg", True, False)]
