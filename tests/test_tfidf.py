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


def test_training_runs_with_one_blas_thread_whatever_the_cores(mr_rows, monkeypatch):
    """So local runs, Ray tasks and any OMP_NUM_THREADS give the same bits; the fold identity records it."""
    from sklearn.pipeline import Pipeline
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    real_fit = Pipeline.fit

    def spy(self, *args, **kwargs):
        seen.append({pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()})
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "fit", spy)
    rows = mr_rows.sample(300, random_state=0)
    data = TextDataset(rows.text.tolist(), rows.label.tolist())
    probabilities = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            model = TfidfLinearClassifier(_config("logistic_regression")).fit(data, labels=["negative", "positive"])
        probabilities.append(model.predict_proba(data))
    assert seen and all(set(pools.values()) == {1} for pools in seen), seen
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    assert model.runtime_info()["blas_threads"] == 1
    assert TfidfLinearClassifier.arithmetic(model.training_arguments, None) == {"blas_threads": 1}
    assert TfidfLinearClassifier.arithmetic(model.training_arguments, None, {"class_weight": None}) == {}


def test_a_min_df_that_leaves_no_term_names_the_setting_and_the_fix(mr_rows):
    rows = mr_rows.sample(40, random_state=0)
    config = _config("logistic_regression", min_df=100)
    with pytest.raises(ModelError, match="min_df 100 leaves no term .* Lower min_df"):
        TfidfLinearClassifier(config).fit(TextDataset(rows.text.tolist(), rows.label.tolist()),
                                          labels=["negative", "positive"])


def test_a_folder_missing_only_its_weights_says_which_file_is_missing(tmp_path, mr_rows):
    rows = mr_rows.sample(60, random_state=0)
    model = TfidfLinearClassifier(_config("logistic_regression")).fit(
        TextDataset(rows.text.tolist(), rows.label.tolist()), labels=["negative", "positive"])
    model.save(tmp_path)
    weights = next(p for p in tmp_path.iterdir() if p.suffix == ".safetensors")
    weights.unlink()
    with pytest.raises(ModelError) as refused:
        TfidfLinearClassifier.load(tmp_path, _config("logistic_regression"))
    assert weights.name in str(refused.value) and f"no {META_FILE}" not in str(refused.value)
    assert "incomplete" in str(refused.value)
