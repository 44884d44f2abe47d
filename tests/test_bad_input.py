"""Every bad input exits non-zero with one clear message, no traceback, and no partial experiment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.cli import REVIEW_COLUMNS, assert_clean_failure, generate_splits



def _splits(cli, path: Path, *extra: str, expect=None):
    return generate_splits(cli, "bad", path, *extra, expect=expect)


def test_missing_file(cli, tmp_path, artifacts):
    assert_clean_failure(_splits(cli, tmp_path / "nope.csv"), "does not exist", artifacts=artifacts)


def test_unreadable_encoding_names_it_and_offers_the_option(cli, tmp_path, artifacts):
    path = tmp_path / "latin.csv"
    path.write_bytes(("text,label\n" + "".join(f"café numéro {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
                     .encode("latin-1"))
    assert_clean_failure(_splits(cli, path), "utf-8", "--encoding", artifacts=artifacts)
    _splits(cli, path, "--encoding", "latin-1", expect=0)


def test_missing_column_lists_the_columns_found(cli, tmp_path, artifacts):
    path = tmp_path / "cols.csv"
    pd.DataFrame({"Sentence": ["a", "b"] * 10, "Sentiment": ["x", "y"] * 10}).to_csv(path, index=False)
    result = _splits(cli, path)
    assert_clean_failure(result, "'text'", "['Sentence', 'Sentiment']", "--text-column", artifacts=artifacts)


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_empty_file(cli, tmp_path, artifacts, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    assert_clean_failure(_splits(cli, path), "empty" if not content else "no data rows", artifacts=artifacts)


def test_empty_texts_dropped_with_count_or_refused_when_strict(cli, tmp_path, artifacts, mr_rows):
    frame = mr_rows.sample(100, random_state=0).reset_index(drop=True)
    frame.loc[[3, 10], "text"] = None
    frame.loc[20, "text"] = "   "
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    assert_clean_failure(_splits(cli, path, "--strict"), "3 rows", "--strict", artifacts=artifacts)
    result = _splits(cli, path, expect=0)
    assert "Dropped 3 rows" in result.output and "97 rows" in result.output


def test_single_class(cli, tmp_path, artifacts):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": ["pos"] * 30}).to_csv(path, index=False)
    assert_clean_failure(_splits(cli, path), "single class", artifacts=artifacts)


def test_class_with_fewer_rows_than_folds(cli, tmp_path, artifacts):
    path = tmp_path / "rare.csv"
    labels = ["pos"] * 40 + ["neg"] * 40 + ["rare"] * 4
    pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    assert_clean_failure(_splits(cli, path), "'rare' has", "--cv-folds", artifacts=artifacts)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_experiment_id_must_be_a_plain_name(cli, small_csv, artifacts, name):
    result = generate_splits(cli, name, small_csv, expect=None)
    assert_clean_failure(result, "plain name", artifacts=artifacts)


def test_existing_experiment_is_not_overwritten_without_force(cli, small_csv, artifacts):
    args = ["--text-column", "Sentence", "--target-column", "Sentiment"]
    _splits(cli, small_csv, *args, expect=0)
    before = (artifacts / "experiments/bad/experiment.json").read_text()
    assert_clean_failure(_splits(cli, small_csv, *args), "already exists", "--force")
    assert (artifacts / "experiments/bad/experiment.json").read_text() == before
    _splits(cli, small_csv, *args, "--seed", "3", "--force", expect=0)
    assert (artifacts / "experiments/bad/experiment.json").read_text() != before


def test_unknown_experiment_lists_known_ones(cli, small_csv):
    generate_splits(cli, "known", small_csv, columns=REVIEW_COLUMNS)
    result = cli("run-backtesting", "--experiment-id", "nope", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, "unknown experiment 'nope'", "known")


def test_unknown_model_config_lists_known_ones(cli, small_csv):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    result = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "nope", expect=None)
    assert_clean_failure(result, "unknown model config 'nope'", "tfidf_logreg")


def test_malformed_config_json_gives_line_and_column(cli, small_csv, tmp_path):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "module_path": "models.tfidf_linear.model",\n  "class_name": "X",,\n}')
    result = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(bad), expect=None)
    assert_clean_failure(result, "broken.json", "line 3", "column")


def test_unknown_config_key_and_training_argument_are_named(cli, small_csv, tmp_path):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    typo = tmp_path / "typo.json"
    typo.write_text('{"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier", "trainig": 1}')
    assert_clean_failure(cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(typo),
                              expect=None), "typo.json", "trainig", "unknown key")
    bad_arg = tmp_path / "badarg.json"
    bad_arg.write_text('{"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier", '
                       '"training_arguments": {"C": -1, "colour": "red"}}')
    assert_clean_failure(cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(bad_arg),
                              expect=None), "training_arguments.C", "training_arguments.colour")


def test_model_code_outside_the_models_package_is_refused(cli, small_csv, tmp_path):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    outside = tmp_path / "outside.json"
    outside.write_text('{"module_path": "os", "class_name": "system"}')
    assert_clean_failure(cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(outside),
                              expect=None), "outside the project's 'models' package", "--allow-external-models")


def test_predict_new_on_a_folder_that_is_not_a_model(cli, tmp_path, small_csv):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    result = cli("predict-new", "--model-path", str(folder), "--input-file", str(small_csv), expect=None)
    assert_clean_failure(result, "not a model folder", "train-final-model")


def test_changed_input_is_detected_before_training(cli, small_csv):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    with small_csv.open("a") as handle:
        handle.write("an extra review,positive\n")
    result = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", "tfidf_logreg", expect=None)
    assert_clean_failure(result, "changed since", "--force")


def test_force_never_replaces_a_folder_that_is_not_a_model(cli, small_csv, tmp_path):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = cli("train-final-model", "--experiment-id", "e", "--model-config-name", "tfidf_logreg",
                 "--model-output-dir", str(precious), "--force", expect=None)
    assert_clean_failure(result, "not a model folder")
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_unknown_encoding_is_a_clear_error(cli, small_csv, artifacts):
    assert_clean_failure(_splits(cli, small_csv, "--encoding", "nope"), "unknown encoding", artifacts=artifacts)


def test_evaluate_prediction_rejects_the_same_column_twice(cli, tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"label": ["a", "b"]}).to_csv(path, index=False)
    result = cli("evaluate-prediction", "--predictions-file", str(path), "--ground-truth-file", str(path),
                 "--prediction-column", "label", expect=None)
    assert_clean_failure(result, "must name different columns")


def test_damaged_model_descriptor_and_remote_code_are_refused(cli, tmp_path, small_csv):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "mlops_model.json").write_text('{"format_version": 1}')
    assert_clean_failure(cli("predict-new", "--model-path", str(folder), "--text", "hi", expect=None),
                          "not a valid model descriptor")
    (folder / "mlops_model.json").write_text(
        '{"format_version": 1, "labels": ["a", "b"], "model_config": {"module_path": "models.hf_encoder.model", '
        '"class_name": "HFEncoderClassifier", "training_arguments": {"trust_remote_code": true}}}')
    assert_clean_failure(cli("predict-new", "--model-path", str(folder), "--text", "hi", expect=None),
                          "trust_remote_code", "--allow-external-models")


def test_a_config_path_that_does_not_exist_is_named_as_a_missing_file(cli, small_csv, tmp_path):
    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    result = cli("run-backtesting", "--experiment-id", "e", "--model-config-name", str(tmp_path / "nope.json"),
                 expect=None)
    assert_clean_failure(result, "the config file", "nope.json does not exist", "Check the path")
    assert "unknown model config" not in result.output


def test_tune_without_a_search_space_suggests_one_the_model_accepts(cli, small_csv, tmp_path):
    import json

    generate_splits(cli, "e", small_csv, columns=REVIEW_COLUMNS)
    config = tmp_path / "plain.json"
    config.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier"}))
    result = cli("tune", "--experiment-id", "e", "--model-config-name", str(config), expect=None)
    assert_clean_failure(result, "has no search_space", '"C": {"type": "loguniform"')
    assert "learning_rate" not in result.output
