"""The whole lifecycle through the real CLI on real MR sentences, with the TF-IDF baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.cli import generate_splits



def _split_args(csv: Path, experiment: str = "exp") -> list[str]:
    return ["generate-splits", "--experiment-id", experiment, "--input-file", str(csv),
            "--text-column", "Sentence", "--target-column", "Sentiment", "--cv-folds", "3", "--seed", "7"]


def test_full_lifecycle(cli, small_csv: Path, artifacts: Path, tmp_path: Path):
    result = cli(*_split_args(small_csv))
    assert "Hold-out: 48 rows" in result.output
    exp_dir = artifacts / "experiments" / "exp"
    info = json.loads((exp_dir / "experiment.json").read_text())
    assert info["labels"] == ["negative", "positive"]
    assert info["split_parameters"]["seed"] == 7 and len(info["input_sha256"]) == 64
    assert info["environment"]["packages"]["scikit-learn"]

    for config in ("tfidf_logreg", "tfidf_svm"):
        cli("run-backtesting", "--experiment-id", "exp", "--model-config-name", config)
    fold = exp_dir / "runs" / "tfidf_logreg" / "backtesting" / "fold_0"
    predictions = pd.read_csv(fold / "predictions.csv")
    assert {"row_id", "text", "label", "predicted_label", "proba_negative", "proba_positive"} <= set(predictions.columns)
    np.testing.assert_allclose(predictions[["proba_negative", "proba_positive"]].sum(axis=1), 1.0, atol=1e-6)
    metrics = json.loads((fold / "metrics.json").read_text())["metrics"]
    assert set(metrics) >= {"accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1",
                            "per_class", "confusion_matrix"}
    assert np.sum(metrics["confusion_matrix"]["matrix"]) == len(predictions)
    # real sentiment signal even on 150 training rows
    summary = json.loads((fold.parent / "summary.json").read_text())
    assert summary["n_folds"] == 3 and summary["accuracy"]["mean"] > 0.55

    ranked = json.loads(cli("compare-models", "--experiment-id", "exp", "--format", "json").stdout)
    assert [r["rank"] for r in ranked] == [1, 2]
    assert ranked[0]["macro_f1_mean"] >= ranked[1]["macro_f1_mean"]
    assert len(ranked[0]["macro_f1_per_fold"]) == 3
    csv_out = cli("compare-models", "--experiment-id", "exp", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("rank,model")

    cli("estimate-performance", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg")
    holdout = pd.read_csv(exp_dir / "runs" / "tfidf_logreg" / "performance_estimation" / "predictions.csv")
    splits = np.load(exp_dir / "splits.npz")
    assert sorted(holdout.row_id) == sorted(splits["holdout_test"].tolist())

    model_dir = tmp_path / "model"
    cli("train-final-model", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg",
        "--model-output-dir", str(model_dir))
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["input_sha256"] == info["input_sha256"] and manifest["seed"] == 7
    assert manifest["rows"]["train"] + manifest["rows"]["val"] == 240
    assert "git" in manifest["environment"]
    assert json.loads((model_dir / "mlops_model.json").read_text())["class_name"] == "TfidfLinearClassifier"
    # refuses to overwrite a model folder silently
    again = cli("train-final-model", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg",
                "--model-output-dir", str(model_dir), expect=3)
    assert "--force" in again.output

    new = tmp_path / "new.csv"
    pd.DataFrame({"id": [1, 2, 3], "Sentence": ["a wonderful , moving film", "dull and lifeless", ""]}).to_csv(new, index=False)
    out_file = tmp_path / "out.csv"
    cli("predict-new", "--model-path", str(model_dir), "--input-file", str(new), "--output-file", str(out_file),
        "--text-column", "Sentence")
    labelled = pd.read_csv(out_file)
    assert list(labelled.columns) == ["id", "Sentence", "predicted_label", "proba_negative", "proba_positive"]
    assert labelled.id.tolist() == [1, 2, 3]
    single = cli("predict-new", "--model-path", str(model_dir), "--text", "a wonderful , moving film")
    assert single.output.split()[0] == labelled.predicted_label[0]

    listed = json.loads(cli("list-experiments", "--format", "json").stdout)
    row = next(r for r in listed if r["model"] == "tfidf_logreg")
    assert "backtesting(3 folds)" in row["stages"] and "estimate" in row["stages"] and "final" in row["stages"]
    assert row["final_model"] == str(model_dir.resolve())
    models = json.loads(cli("list-models", "--format", "json").stdout)
    assert {"tfidf_logreg", "tfidf_svm"} <= {m["name"] for m in models}


def test_predict_new_streams_in_chunks_and_reads_parquet(cli, small_csv: Path, tmp_path: Path):
    cli(*_split_args(small_csv))
    cli("train-final-model", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg")
    model_dir = tmp_path / "artifacts" / "experiments" / "exp" / "runs" / "tfidf_logreg" / "final_model"
    frame = pd.read_csv(small_csv).rename(columns={"Sentence": "text"})
    parquet = tmp_path / "new.parquet"
    frame.to_parquet(parquet)
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    cli("predict-new", "--model-path", str(model_dir), "--input-file", str(parquet), "--output-file", str(whole))
    cli("predict-new", "--model-path", str(model_dir), "--input-file", str(parquet), "--output-file", str(chunked),
        "--chunk-rows", "7")
    a, b = pd.read_csv(whole), pd.read_csv(chunked)
    assert len(a) == len(frame)
    pd.testing.assert_frame_equal(a, b)
    refused = cli("predict-new", "--model-path", str(model_dir), "--input-file", str(parquet), "--output-file",
                  str(whole), expect=3)
    assert "already exists" in refused.output


def test_evaluate_prediction_by_position_and_id(cli, tmp_path: Path):
    predictions = tmp_path / "pred.csv"
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"id": [1, 2, 3, 4], "predicted_label": ["a", "a", "a", "b"]}).to_csv(predictions, index=False)
    pd.DataFrame({"id": [4, 3, 2, 1], "label": ["b", "a", "a", "a"]}).to_csv(truth, index=False)
    by_id = json.loads(cli("evaluate-prediction", "--predictions-file", str(predictions), "--ground-truth-file",
                           str(truth), "--id-column", "id", "--format", "json").stdout)
    assert by_id["accuracy"] == 1.0
    refused = cli("evaluate-prediction", "--predictions-file", str(predictions), "--ground-truth-file", str(truth),
                  expect=None)  # by position, the shared id column shows the files are in another order
    assert refused.exit_code != 0 and "not in the same order" in refused.output
    pd.read_csv(truth).drop(columns=["id"]).to_csv(truth, index=False)
    by_position = json.loads(cli("evaluate-prediction", "--predictions-file", str(predictions),
                                 "--ground-truth-file", str(truth), "--format", "json").stdout)
    assert by_position["accuracy"] == 0.5


def test_train_val_strategy_and_text_pairs_and_groups(cli, tmp_path: Path, mr_rows):
    frame = mr_rows.sample(200, random_state=1).reset_index(drop=True)
    frame["hypothesis"] = np.where(np.arange(200) % 2 == 0, "it is good", "it is bad")
    frame["author"] = [f"u{i % 40}" for i in range(200)]
    csv = tmp_path / "pairs.csv"
    frame.to_csv(csv, index=False)
    generate_splits(cli, "pairs", csv, "--text-pair-column", "hypothesis", "--group-column", "author",
                    '--backtesting-strategy', 'train-val')
    result = cli("run-backtesting", "--experiment-id", "pairs", "--model-config-name", "tfidf_logreg")
    assert "1 fold(s)" in result.output
    splits = np.load(tmp_path / "artifacts" / "experiments" / "pairs" / "splits.npz")
    authors = frame["author"].to_numpy()
    assert not set(authors[splits["holdout_test"]]) & set(authors[splits["train_val"]])
    predictions = pd.read_csv(tmp_path / "artifacts/experiments/pairs/runs/tfidf_logreg/backtesting/fold_0/predictions.csv")
    assert "text_pair" in predictions.columns


def test_hyperparameter_search_runs_inside_training_data(cli, small_csv: Path, artifacts: Path):
    cli(*_split_args(small_csv))
    cli("estimate-performance", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg_search")
    cli("train-final-model", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg_search")
    meta = json.loads((artifacts / "experiments/exp/runs/tfidf_logreg_search/final_model/tfidf_model.json").read_text())
    assert meta["search_result"]["best_params"]["classifier__C"] in [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
