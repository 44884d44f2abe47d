"""--track mlflow / tensorboard against real stores: a SQLite-backed MLflow store read back with MlflowClient."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from helpers.cli import REVIEW_COLUMNS, generate_splits
from helpers.hf import write_tiny_encoder_config, write_topic_csv



@pytest.fixture
def no_tracking_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _experiment(cli, csv: Path, name: str = "trk") -> None:
    generate_splits(cli, name, csv, folds=3, columns=REVIEW_COLUMNS)


def _runs(artifacts: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(artifacts / 'mlflow.db').resolve()}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, "no MLflow experiment was created"
    return client, client.search_runs([found.experiment_id])


def test_backtesting_logs_a_parent_run_and_one_nested_run_per_fold(cli, small_csv, artifacts, no_tracking_env):
    _experiment(cli, small_csv)
    cli("run-backtesting", "--experiment-id", "trk", "--model-config-name", "tfidf_logreg", "--track", "mlflow")
    client, runs = _runs(artifacts, "trk")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    info = json.loads((artifacts / "experiments" / "trk" / "experiment.json").read_text())
    assert parent.data.params["input_sha256"] == info["input_sha256"]
    assert parent.data.params["seed"] == "42"
    assert parent.data.params["config.training_arguments.C"] == "4.0"
    folds = {c.info.run_name: c for c in children}
    assert sorted(folds) == ["fold_0", "fold_1", "fold_2"]
    for k, run in sorted(folds.items()):
        stored = json.loads((artifacts / "experiments" / "trk" / "runs" / "tfidf_logreg" / "backtesting" / k /
                             "metrics.json").read_text())["metrics"]
        assert run.data.metrics["accuracy"] == pytest.approx(stored["accuracy"])
        assert run.data.metrics["macro_f1"] == pytest.approx(stored["macro_f1"])
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "metrics.json"} <= names
    summary = json.loads((artifacts / "experiments/trk/runs/tfidf_logreg/backtesting/summary.json").read_text())
    assert parent.data.metrics["macro_f1_mean"] == pytest.approx(summary["macro_f1"]["mean"])  # the headline
    assert parent.data.metrics["accuracy_std"] == pytest.approx(summary["accuracy"]["std"])
    # the artifacts live beside the database, under the artifacts root
    assert (artifacts / "mlflow-artifacts").is_dir()


def test_encoder_epochs_reach_mlflow_and_tensorboard(cli, artifacts, tmp_path, no_tracking_env):
    data = write_topic_csv(tmp_path / "topics.csv", 120, seed=2)
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert",
                                       training_arguments={"early_stopping_patience": None})
    generate_splits(cli, "enc", data, folds=2)
    cli("run-backtesting", "--experiment-id", "enc", "--model-config-name", str(config), "--track", "mlflow",
        "--track", "tensorboard")
    client, runs = _runs(artifacts, "enc")
    fold = next(r for r in runs if r.info.run_name == "fold_0")
    history = client.get_metric_history(fold.info.run_id, "validation_f1_macro")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert len(client.get_metric_history(fold.info.run_id, "train_loss")) == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = artifacts / "experiments" / "enc" / "runs" / "tiny" / "tensorboard" / "backtesting" / "fold_0"
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert {"epoch/train_loss", "epoch/validation_f1_macro", "test/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2, 3]


def test_an_unreachable_tracking_server_is_one_warning_not_a_failure(cli, small_csv, artifacts, monkeypatch):
    with socket.socket() as probe:  # a free loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    _experiment(cli, small_csv)
    result = cli("run-backtesting", "--experiment-id", "trk", "--model-config-name", "tfidf_logreg", "--track",
                 "mlflow")
    output = " ".join(result.output.split())  # the log wraps long lines
    assert "tracking with mlflow failed" in output and "training goes on without it" in output
    assert output.count("tracking with mlflow failed") == 1
    assert (artifacts / "experiments" / "trk" / "runs" / "tfidf_logreg" / "backtesting" / "summary.json").is_file()


def test_without_track_neither_library_is_imported(tmp_path):
    import subprocess
    import sys

    probe = ("import sys; from mlops.app import Application; Application(sys.argv[1]); "
             "print([m for m in ('mlflow', 'tensorboard', 'matplotlib') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
