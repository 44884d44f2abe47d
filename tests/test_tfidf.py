"""The TF-IDF baseline: the pickle-free saved form predicts exactly what scikit-learn predicts."""

from __future__ import annotations

import numpy as np
import pytest

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.text_dataset import TextDataset
from models.tfidf_linear.model import META_FILE, TfidfLinearClassifier


def _config(classifier: str, **extra) -> ModelConfig:
    return ModelConfig(module_path="models.tfidf_linear.model", class_name="TfidfLinearClassifier",
                       training_arguments={"classifier": classifier, **extra})


@pytest.mark.parametrize("classifier", ["logistic_regression", "linear_svm"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_saved_model_reproduces_sklearn_probabilities(tmp_path, mr_rows, classifier, n_classes):
    rows = mr_rows.sample(450, random_state=3).reset_index(drop=True)
    labels = rows.label.tolist()
    if n_classes == 3:  # a third class from text length, so it is learnable
        labels = ["long" if len(t) > 150 else l for t, l in zip(rows.text, labels, strict=True)]
    label_set = sorted(set(labels))
    train = TextDataset(rows.text[:350].tolist(), labels[:350])
    test = TextDataset(rows.text[350:].tolist() + ["", "zzzz unseen words only"])
    model = TfidfLinearClassifier(_config(classifier)).fit(train, labels=label_set)
    expected = model.predict_proba(test)
    model.save(tmp_path)
    loaded = TfidfLinearClassifier.load(tmp_path, _config(classifier))
    np.testing.assert_allclose(loaded.predict_proba(test), expected, rtol=1e-5, atol=1e-6)  # float32 features in sklearn, float64 here
    assert loaded.labels == label_set
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-6)


def test_label_absent_from_training_gets_zero_probability_column():
    train = TextDataset(["good", "great fun", "bad", "awful mess"] * 5, ["pos", "pos", "neg", "neg"] * 5)
    model = TfidfLinearClassifier(_config("logistic_regression")).fit(train, labels=["neg", "neutral", "pos"])
    proba = model.predict_proba(TextDataset(["good"]))
    assert proba.shape == (1, 3) and proba[0, 1] == 0.0 and proba[0].argmax() == 2


def test_damaged_model_file_is_a_clear_error(tmp_path):
    train = TextDataset(["good", "bad"] * 10, ["pos", "neg"] * 10)
    TfidfLinearClassifier(_config("logistic_regression")).fit(train, labels=["neg", "pos"]).save(tmp_path)
    (tmp_path / META_FILE).write_text('{"format_version": 99, "labels": ["neg", "pos"]}')
    with pytest.raises(ModelError, match="damaged"):
        TfidfLinearClassifier.load(tmp_path, _config("logistic_regression"))
