"""--executor ray: the same folds, metrics and files as the local executor; failures and impossible sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.cli import generate_splits


pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]  # starts Ray


def _split(cli, csv: Path, artifacts: Path, folds: int = 3, *columns: str) -> None:
    generate_splits(cli, "x", csv, *columns, folds=str(folds), artifacts_dir=artifacts)


def _folds(artifacts: Path, config: str) -> list[tuple[dict, pd.DataFrame]]:
    base = artifacts / "experiments" / "x" / "runs" / config / "backtesting"
    return [(json.loads((d / "metrics.json").read_text()),
             pd.concat([pd.read_csv(d / "predictions.csv"), pd.read_csv(d / "val_predictions.csv")]))
            for d in sorted(base.glob("fold_*"))]


def _assert_same_runs(local: Path, ray: Path, config: str, n_folds: int) -> None:
    a, b = _folds(local, config), _folds(ray, config)
    assert len(a) == len(b) == n_folds
    for (record_a, frame_a), (record_b, frame_b) in zip(a, b, strict=True):
        assert record_a["metrics"] == record_b["metrics"]
        assert record_a["identity"] == record_b["identity"]
        pd.testing.assert_frame_equal(frame_a, frame_b)
    summary = "experiments/x/runs/{}/backtesting/summary.json".format(config)
    assert json.loads((local / summary).read_text()) == json.loads((ray / summary).read_text())
    assert b[0][0]["runtime"]["executor"]["kind"] == "ray"


def test_ray_and_local_executors_give_the_same_folds_for_tfidf(cli, small_csv, tmp_path):
    local, ray = tmp_path / "local", tmp_path / "ray"
    columns = ("--text-column", "Sentence", "--target-column", "Sentiment")
    for root in (local, ray):
        _split(cli, small_csv, root, 3, *columns)
    per_fold = tmp_path / "per_fold.json"  # as `tune --nested` writes: each fold trains with its own values
    per_fold.write_text(json.dumps({
        "module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
        "training_arguments": {"C": 1.0, "char_ngram_range": None},
        "fold_training_arguments": {"0": {"C": 0.05}, "1": {"C": 20.0}, "2": {"word_ngram_range": [1, 1]}}}))
    models = ("--model-config-name", "tfidf_logreg", "--model-config-name", "tfidf_svm",
              "--model-config-name", str(per_fold))
    cli("run-backtesting", "--experiment-id", "x", *models, artifacts_dir=local)
    cli("run-backtesting", "--experiment-id", "x", *models, "--executor", "ray", artifacts_dir=ray)
    for config in ("tfidf_logreg", "tfidf_svm", "per_fold"):
        _assert_same_runs(local, ray, config, 3)
    again = cli("run-backtesting", "--experiment-id", "x", *models, "--executor", "ray", artifacts_dir=ray)
    assert again.output.count("Reused completed folds [1, 2, 3]") == 3
    shared = cli("run-backtesting", "--experiment-id", "x", "--model-config-name", "tfidf_logreg", "--force",
                 "--executor", "ray", "--ray-shared-data", artifacts_dir=ray)
    assert "Reused" not in shared.output
    _assert_same_runs(local, ray, "tfidf_logreg", 3)


def test_ray_scores_multi_label_folds_with_their_tuned_thresholds(cli, tmp_path):
    """Each label's threshold is tuned on the fold's val rows in the Ray task and comes back with the
    probabilities: the same metrics and label sets as the local executor's."""
    data = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "shapes" / "debian_works_with.csv",
                       keep_default_na=False).head(240)
    csv = tmp_path / "tags.csv"
    data.to_csv(csv, index=False)
    local, ray = tmp_path / "local", tmp_path / "ray"
    for root in (local, ray):
        _split(cli, csv, root, 2, "--target-column", "tags", "--label-separator", "|", "--group-column", "source")
    cli("run-backtesting", "--experiment-id", "x", "--model-config-name", "tfidf_logreg", artifacts_dir=local)
    cli("run-backtesting", "--experiment-id", "x", "--model-config-name", "tfidf_logreg", "--executor", "ray",
        artifacts_dir=ray)
    _assert_same_runs(local, ray, "tfidf_logreg", 2)
    assert any(t != 0.5 for t in _folds(ray, "tfidf_logreg")[0][0]["metrics"]["thresholds"])


@pytest.fixture
def tiny_encoder(tmp_path: Path) -> tuple[Path, Path]:
    from helpers.hf import write_tiny_encoder_config, write_topic_csv

    csv = write_topic_csv(tmp_path / "topics.csv", 120, seed=5)
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert", resources={"cpus": 1},
                                       training_arguments={"epochs": 2, "early_stopping_patience": None})
    return csv, config


def test_ray_and_local_executors_give_the_same_folds_for_a_tiny_encoder(cli, tmp_path, tiny_encoder):
    csv, config = tiny_encoder
    local, ray = tmp_path / "local", tmp_path / "ray"
    for root in (local, ray):
        _split(cli, csv, root, 2)
    cli("run-backtesting", "--experiment-id", "x", "--model-config-name", str(config), artifacts_dir=local)
    cli("run-backtesting", "--experiment-id", "x", "--model-config-name", str(config), "--executor", "ray",
        artifacts_dir=ray)
    _assert_same_runs(local, ray, "tiny", 2)


def test_a_failed_task_fails_the_command_with_that_folds_error(cli, tmp_path, tiny_encoder):
    csv, config = tiny_encoder
    broken = tmp_path / "broken.json"
    raw = json.loads(config.read_text())
    broken.write_text(json.dumps({**raw, "model_name": str(tmp_path / "no-such-model")}))  # fails inside the task
    _split(cli, csv, tmp_path / "a", 2)
    result = cli("run-backtesting", "--experiment-id", "x", "--model-config-name", str(broken), "--executor", "ray",
                 artifacts_dir=tmp_path / "a", expect=None)
    assert result.exit_code != 0
    assert "backtesting fold 1/2 of broken failed" in result.output
    assert not list((tmp_path / "a" / "experiments/x/runs/broken/backtesting").glob("fold_*"))


def test_a_task_no_node_can_run_is_refused_instead_of_waiting(cli, small_csv, tmp_path):
    config = tmp_path / "huge.json"
    config.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "resources": {"cpus": 64}}))
    _split(cli, small_csv, tmp_path / "a", 2, "--text-column", "Sentence", "--target-column", "Sentiment")
    result = cli("run-backtesting", "--experiment-id", "x", "--model-config-name", str(config), "--executor", "ray",
                 artifacts_dir=tmp_path / "a", expect=2)
    assert "asks for 64 CPUs" in result.output and '"resources"' in result.output


def test_tune_on_ray_runs_the_same_trials_as_locally(cli, small_csv, tmp_path):
    results = {}
    for executor in ("local", "ray"):
        root = tmp_path / executor
        _split(cli, small_csv, root, 2, "--text-column", "Sentence", "--target-column", "Sentiment")
        out = cli("tune", "--experiment-id", "x", "--model-config-name", "tfidf_logreg", "--n-trials", "3",
                  "--format", "json", "--executor", executor, artifacts_dir=root)
        results[executor] = json.loads(out.stdout)
    strip = [[{k: t[k] for k in ("number", "state", "value", "params")} for t in r["trials"]] for r in results.values()]
    assert strip[0] == strip[1]
    assert results["ray"]["best_params"] == results["local"]["best_params"]
    assert Path(results["ray"]["best_config_path"]).is_file()
