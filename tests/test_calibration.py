"""Calibration: ECE in every run's metrics, temperature scaling of the encoder (fitted on validation rows only,
saved, exported to ONNX) and CalibratedClassifierCV for the TF-IDF baseline (saved pickle-free)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import REVIEW_COLUMNS, generate_splits
from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.calibration_error import expected_calibration_error
from mlops.core.metrics import compute_metrics
from mlops.core.model_interface import FitContext
from mlops.core.plugins import resolve
from mlops.core.text_dataset import TextDataset
from mlops.experiments.fold import fit_and_predict
from models.hf_common.calibration import calibrate_temperature, fit_temperature, mean_log_loss, softmax

LABELS = ["tech", "food", "sports"]  # deliberately not sorted
CALIBRATION_KEYS = {"method", "temperature", "validation_log_loss_before", "validation_log_loss_after",
                    "validation_ece_before", "validation_ece_after"}


# --- ECE -------------------------------------------------------------------------------------------------


def test_ece_matches_a_hand_computed_example():
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.52, 0.48]])
    y = np.array([0, 1, 1, 1, 0])
    # 15 bins of width 1/15: 0.9 -> bin 13 (2 rows, accuracy 1/2), 0.7 -> bin 10 (right), 0.55 -> bin 8 (wrong),
    # 0.52 -> bin 7 (right): |0.5-0.9|*2/5 + |1-0.7|/5 + |0-0.55|/5 + |1-0.52|/5
    expected = 0.4 * 2 / 5 + 0.3 / 5 + 0.55 / 5 + 0.48 / 5
    assert expected == pytest.approx(0.426)
    assert expected_calibration_error(proba, y) == pytest.approx(expected, abs=1e-12)

    metrics = compute_metrics(["a", "b", "b", "b", "a"], proba, ["a", "b"])
    assert metrics["ece"] == pytest.approx(expected, abs=1e-12)
    assert compute_metrics(["a", "b"], None, ["a", "b"], y_pred=["a", "a"])["ece"] is None
    # certain and always right: perfectly calibrated (a confidence of exactly 1 falls in the last bin)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0
    assert expected_calibration_error(np.empty((0, 2)), np.empty(0, dtype=int)) is None


def test_fit_temperature_recovers_an_overconfident_scale_and_keeps_the_argmax():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    y = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    logits = 3.0 * true_logits  # three times too confident
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert mean_log_loss(logits, y, temperature) < mean_log_loss(logits, y)
    np.testing.assert_array_equal(softmax(logits, temperature).argmax(1), logits.argmax(1))
    # a well-calibrated model keeps T close to 1
    assert fit_temperature(true_logits, y) == pytest.approx(1.0, abs=0.1)


def test_without_validation_rows_the_temperature_stays_one(caplog):
    with caplog.at_level(logging.WARNING):
        temperature, record = calibrate_temperature(None, None)
    assert temperature == 1.0 and "there is none" in caplog.text
    assert set(record) >= CALIBRATION_KEYS and record["temperature"] == 1.0 and record["validation_rows"] == 0
    assert record["validation_log_loss_before"] is None and record["validation_ece_after"] is None


# --- the encoder -------------------------------------------------------------------------------------------


def encoder_config(model_dir: Path, **training_arguments) -> ModelConfig:
    arguments = {"epochs": 6, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0, "max_length": 32,
                 "num_threads": 1, "precision": "fp32", "early_stopping_patience": None, **training_arguments}
    return ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                       model_name=str(model_dir), training_arguments=arguments)


def fit_encoder(config: ModelConfig, train: TextDataset, val: TextDataset | None):
    from models.hf_encoder.model import HFEncoderClassifier

    return HFEncoderClassifier(config).fit(train, val, labels=LABELS, context=FitContext(seed=0, show_progress=False))


def label_indices(data: TextDataset) -> np.ndarray:
    return np.array([LABELS.index(label) for label in data.labels])


@pytest.fixture(scope="module")
def calibrated(tiny_bert, topics):
    """A calibrated encoder, with what ``calibrate_temperature`` was called with (a spy)."""
    import models.hf_encoder.model as encoder_module

    calls = []

    def spy(logits, y):
        calls.append((None if logits is None else logits.copy(), None if y is None else y.copy()))
        return calibrate_temperature(logits, y)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder_module, "calibrate_temperature", spy)
        model = fit_encoder(encoder_config(tiny_bert, calibration="temperature"), topics["train"], topics["val"])
    return model, calls


@pytest.fixture(scope="module")
def uncalibrated(tiny_bert, topics):
    return fit_encoder(encoder_config(tiny_bert), topics["train"], topics["val"])


def test_the_temperature_is_fitted_on_validation_logits_only(calibrated, topics):
    model, calls = calibrated
    assert len(calls) == 1
    logits, y = calls[0]
    val, test = topics["val"], topics["test"]
    assert logits.shape == (len(val), len(LABELS))
    np.testing.assert_array_equal(y, label_indices(val))
    # the logits of the weights kept (the best epoch's, restored before calibrating), as prediction computes them
    np.testing.assert_array_equal(logits, model._predict(val, logits_only=True)[0])
    temperature = model.temperature
    assert temperature > 0 and temperature != pytest.approx(1.0, abs=1e-3)
    # T minimises the validation log-loss, not the test rows'
    for other in (temperature * 1.05, temperature / 1.05, 1.0):
        assert mean_log_loss(logits, y, temperature) <= mean_log_loss(logits, y, other)
    test_logits = model._predict(test, logits_only=True)[0]
    assert fit_temperature(test_logits, label_indices(test)) != pytest.approx(temperature, rel=1e-3)

    info = model.runtime_info()["calibration"]
    assert set(info) >= CALIBRATION_KEYS and info["method"] == "temperature"
    assert info["temperature"] == temperature and info["validation_rows"] == len(val)
    assert info["validation_log_loss_after"] < info["validation_log_loss_before"]
    assert info["validation_log_loss_before"] == pytest.approx(mean_log_loss(logits, y))
    assert info["validation_ece_after"] == pytest.approx(
        expected_calibration_error(softmax(logits, temperature), y))


def test_calibration_keeps_the_argmax_and_off_changes_nothing(calibrated, uncalibrated, topics):
    import torch

    model, _ = calibrated
    test = topics["test"]
    proba, raw = model.predict_proba(test), model.predict_proba_uncalibrated(test)
    np.testing.assert_array_equal(proba.argmax(1), raw.argmax(1))
    assert np.abs(proba - raw).max() > 1e-3
    test_logits = model._predict(test, logits_only=True)[0]
    np.testing.assert_allclose(proba, softmax(test_logits, model.temperature), atol=1e-6)
    # calibration runs after training, so the uncalibrated probabilities are exactly the default model's...
    np.testing.assert_array_equal(raw, uncalibrated.predict_proba(test))
    # ...which are the softmax of the network's logits, as before calibration existed
    assert uncalibrated.temperature == 1.0 and "calibration" not in uncalibrated.runtime_info()
    network = uncalibrated.fitted_module()
    inputs = uncalibrated.encode(list(test.texts), None, np.arange(len(test)))
    with torch.inference_mode():
        expected = torch.softmax(network(**inputs).logits.float(), dim=-1).numpy()
    np.testing.assert_allclose(uncalibrated.predict_proba(test), expected, atol=1e-6)


def test_save_load_keeps_the_temperature(calibrated, uncalibrated, topics, tmp_path, tiny_bert):
    from models.hf_encoder.model import META_FILE, HFEncoderClassifier

    model, _ = calibrated
    config = encoder_config(tiny_bert, calibration="temperature")
    model.save(tmp_path / "calibrated")
    meta = json.loads((tmp_path / "calibrated" / META_FILE).read_text())
    assert meta["calibration"]["method"] == "temperature" and meta["calibration"]["temperature"] == model.temperature
    loaded = HFEncoderClassifier.load(tmp_path / "calibrated", config, device="cpu")
    assert loaded.temperature == model.temperature
    assert loaded.runtime_info()["calibration"]["temperature"] == model.temperature
    np.testing.assert_allclose(loaded.predict_proba(topics["test"]), model.predict_proba(topics["test"]), atol=1e-6)
    np.testing.assert_allclose(loaded.predict_proba_uncalibrated(topics["test"]),
                               model.predict_proba_uncalibrated(topics["test"]), atol=1e-6)

    uncalibrated.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / META_FILE).read_text())["calibration"] is None
    assert HFEncoderClassifier.load(tmp_path / "plain", encoder_config(tiny_bert), device="cpu").temperature == 1.0


def test_the_onnx_export_applies_the_temperature(calibrated, topics, tmp_path):
    from models.onnx_encoder.model import EXPORT_FILE, OnnxEncoderClassifier

    model, _ = calibrated
    test = topics["test"]
    facts = model.export_onnx(tmp_path, precision="fp32", calibration=TextDataset(list(topics["train"].texts[:8])),
                              check=test, min_agreement=1.0)
    # the export's own check compared it with the calibrated fp32 torch model
    assert facts["temperature"] == model.temperature
    assert facts["check_against_fp32_torch"]["max_abs_probability_difference"] < 1e-4
    assert json.loads((tmp_path / EXPORT_FILE).read_text())["temperature"] == model.temperature
    runtime = OnnxEncoderClassifier.load(tmp_path, ModelConfig(module_path="models.onnx_encoder.model",
                                                               class_name="OnnxEncoderClassifier"), device="cpu")
    assert runtime.runtime_info()["temperature"] == model.temperature
    onnx = runtime.predict_proba(test)
    np.testing.assert_allclose(onnx, model.predict_proba(test), atol=1e-4)
    assert np.abs(onnx - model.predict_proba_uncalibrated(test)).max() > 1e-3


def test_without_a_validation_split_the_encoder_warns_and_keeps_t_one(tiny_bert, topics, caplog):
    with caplog.at_level(logging.WARNING, logger="models.hf_common.calibration"):
        model = fit_encoder(encoder_config(tiny_bert, epochs=1, calibration="temperature"), topics["train"], None)
    assert "there is none" in caplog.text
    info = model.runtime_info()["calibration"]
    assert model.temperature == 1.0 and info["temperature"] == 1.0 and info["validation_rows"] == 0
    np.testing.assert_array_equal(model.predict_proba(topics["test"]), model.predict_proba_uncalibrated(topics["test"]))


# --- TF-IDF ---------------------------------------------------------------------------------------------


def tfidf_config(**training_arguments) -> ModelConfig:
    return ModelConfig(module_path="models.tfidf_linear.model", class_name="TfidfLinearClassifier",
                       training_arguments=training_arguments)


@pytest.fixture(scope="module")
def reviews(mr_rows):
    rows = mr_rows.sample(450, random_state=3).reset_index(drop=True)
    # a third class from text length, so three classes are learnable too
    three = ["long" if len(t) > 150 else label for t, label in zip(rows.text, rows.label, strict=True)]
    return rows.text.tolist(), rows.label.tolist(), three


@pytest.mark.parametrize("classifier,method", [("logistic_regression", "sigmoid"),
                                               ("logistic_regression", "isotonic"), ("linear_svm", "isotonic")])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_tfidf_calibration_round_trips_save_load(tmp_path, reviews, classifier, method, n_classes):
    from models.tfidf_linear.model import META_FILE, TfidfLinearClassifier

    texts, two, three = reviews
    labels = two if n_classes == 2 else three
    label_set = sorted(set(labels))
    train, val = TextDataset(texts[:300], labels[:300]), TextDataset(texts[300:350], labels[300:350])
    test = TextDataset(texts[350:] + ["", "zzzz unseen words only"])
    config = tfidf_config(classifier=classifier, calibration=method)
    model = TfidfLinearClassifier(config).fit(train, val, labels=label_set)
    expected = model.predict_proba(test)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-6)
    model.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["classifier"]["method"] == method and meta["format_version"] == (2 if method == "isotonic" else 1)
    loaded = TfidfLinearClassifier.load(tmp_path, config)
    np.testing.assert_allclose(loaded.predict_proba(test), expected, rtol=1e-5, atol=1e-6)
    info = model.runtime_info()["calibration"]
    assert set(info) >= CALIBRATION_KEYS and info["method"] == method and info["temperature"] is None
    assert loaded.runtime_info() == model.runtime_info()
    assert info["validation_rows"] == 50 and info["validation_log_loss_after"] is not None
    raw = model.predict_proba_uncalibrated(test)
    if classifier == "linear_svm":  # an SVM has no probabilities before calibration
        assert raw is None and loaded.predict_proba_uncalibrated(test) is None
        assert info["validation_log_loss_before"] is None
    else:
        np.testing.assert_allclose(loaded.predict_proba_uncalibrated(test), raw, rtol=1e-5, atol=1e-6)
        assert not np.allclose(raw, expected) and info["validation_ece_before"] is not None


def test_tfidf_defaults_are_unchanged(tmp_path, reviews):
    from sklearn.linear_model import LogisticRegression

    from models.tfidf_linear.model import META_FILE, TfidfLinearClassifier

    texts, labels, _ = reviews
    train, test = TextDataset(texts[:300], labels[:300]), TextDataset(texts[300:])
    label_set = sorted(set(labels))
    plain = TfidfLinearClassifier(tfidf_config()).fit(train, labels=label_set)
    assert isinstance(plain._pipeline.named_steps["classifier"], LogisticRegression)
    assert plain.runtime_info() == {"blas_threads": 1} and plain.predict_proba_uncalibrated(test) is None
    # the SVM is calibrated as before (sigmoid, 3 folds), whether or not that is spelled out
    svm = TfidfLinearClassifier(tfidf_config(classifier="linear_svm")).fit(train, labels=label_set)
    spelled = TfidfLinearClassifier(tfidf_config(classifier="linear_svm", calibration="sigmoid")).fit(
        train, labels=label_set)
    np.testing.assert_array_equal(svm.predict_proba(test), spelled.predict_proba(test))
    assert svm.runtime_info()["calibration"]["method"] == "sigmoid"
    # an SVM saved before method/base were recorded still loads, as sigmoid-calibrated
    svm.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["format_version"] == 1
    for key in ("method", "base"):
        del meta["classifier"][key]
    del meta["calibration"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    old = TfidfLinearClassifier.load(tmp_path, tfidf_config(classifier="linear_svm"))
    np.testing.assert_allclose(old.predict_proba(test), svm.predict_proba(test), rtol=1e-5, atol=1e-6)


def test_tfidf_calibration_refuses_what_it_cannot_fit_or_save(tmp_path, reviews):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    from models.tfidf_linear.model import TfidfLinearClassifier

    texts, labels, _ = reviews
    few = TextDataset(texts[:40] + texts[40:42], labels[:40] + ["rare", "rare"])
    with pytest.raises(ModelError, match="at least 3 training rows"):
        TfidfLinearClassifier(tfidf_config(calibration="isotonic")).fit(few, labels=[*sorted(set(labels)), "rare"])
    # a calibration this format has no place for is refused at save, not written half-way
    model = TfidfLinearClassifier(tfidf_config(calibration="sigmoid")).fit(TextDataset(texts[:200], labels[:200]),
                                                                           labels=sorted(set(labels)))
    features = model._pipeline[:-1].transform(texts[:200])
    other = CalibratedClassifierCV(LogisticRegression(), method="temperature", cv=3).fit(features, labels[:200])
    model._pipeline.steps[-1] = ("classifier", other)
    with pytest.raises(ModelError, match="cannot be saved.*temperature"):
        model.save(tmp_path)


# --- what a run records -------------------------------------------------------------------------------------


def test_fit_and_predict_gives_uncalibrated_test_probabilities_only_where_calibrated(reviews):
    texts, labels, _ = reviews
    train, val = TextDataset(texts[:250], labels[:250]), TextDataset(texts[250:300], labels[250:300])
    test = TextDataset(texts[300:], labels[300:])
    label_set = sorted(set(labels))
    outcomes = {}
    for name, arguments in {"plain": {}, "sigmoid": {"calibration": "sigmoid"},
                            "svm": {"classifier": "linear_svm", "calibration": "isotonic"}}.items():
        named = resolve(tfidf_config(**arguments), name=name, source="test")
        outcomes[name] = fit_and_predict(named, train, val, test, label_set, FitContext(seed=0, show_progress=False))
    assert outcomes["plain"].proba_uncalibrated is None
    assert outcomes["svm"].proba_uncalibrated is None  # calibrated, but no probabilities before
    outcome = outcomes["sigmoid"]
    np.testing.assert_array_equal(outcome.proba_uncalibrated, outcome.model.predict_proba_uncalibrated(test))
    before = compute_metrics(test.labels, outcome.proba_uncalibrated, label_set)
    after = compute_metrics(test.labels, outcome.proba, label_set)
    assert before["ece"] is not None and after["ece"] is not None and before["ece"] != after["ece"]


def test_the_fold_record_holds_ece_and_the_uncalibrated_metrics(cli, small_csv, artifacts, tmp_path):
    config = tmp_path / "tfidf_sigmoid.json"
    config.write_text(json.dumps({"module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
                                  "training_arguments": {"calibration": "sigmoid"}}))
    generate_splits(cli, "exp", small_csv, folds=2, seed=7, columns=REVIEW_COLUMNS)
    cli("run-backtesting", "--experiment-id", "exp", "--model-config-name", str(config))
    cli("run-backtesting", "--experiment-id", "exp", "--model-config-name", "tfidf_logreg")
    runs = artifacts / "experiments" / "exp" / "runs"
    calibrated = json.loads(next((runs / "tfidf_sigmoid").glob("backtesting/fold_0/metrics.json")).read_text())
    assert 0 <= calibrated["metrics"]["ece"] <= 1
    assert calibrated["metrics_uncalibrated"]["n"] == calibrated["metrics"]["n"]
    assert calibrated["metrics_uncalibrated"]["ece"] != calibrated["metrics"]["ece"]
    assert set(calibrated["runtime"]["calibration"]) >= CALIBRATION_KEYS
    plain = json.loads((runs / "tfidf_logreg" / "backtesting" / "fold_0" / "metrics.json").read_text())
    assert plain["metrics_uncalibrated"] is None and plain["metrics"]["ece"] is not None
