"""The ModelInterface contract, checked the same way over every model family (cf. sklearn's check_estimator).

A new plugin gets these checks by being listed once in FAMILIES: a name, how to build its config (tiny
models only: no network, seconds per fit), and whether it trains (an ONNX export only predicts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers.hf import build_tiny_bert, multi_topic_data, topic_data
from helpers.llm import build_tiny_causal_lm
from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface
from mlops.core.plugins import resolve
from mlops.core.text_dataset import TextDataset

#: Deliberately not sorted: columns must follow this order, not the alphabet or the training data's.
LABELS = ["tech", "sports", "food"]
TEXTS, TARGETS = topic_data(90, seed=5, topics=tuple(LABELS))
TRAIN = TextDataset(TEXTS[:60], TARGETS[:60])
VAL = TextDataset(TEXTS[60:75], TARGETS[60:75])
TEST = TextDataset(TEXTS[75:])
TWO_CLASS_TRAIN = TextDataset([t for t, y in zip(TRAIN.texts, TRAIN.labels) if y != "sports"],
                              [y for y in TRAIN.labels if y != "sports"])

ENCODER_ARGS = {"epochs": 10, "early_stopping_patience": None, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0, "max_length": 24,
                "num_threads": 1, "precision": "fp32"}


@dataclass(frozen=True)
class Family:
    name: str
    module_path: str
    class_name: str
    arguments: dict
    base: Callable[[Path], Path] | None = None  # builds the pretrained folder model_name points at
    trains: bool = True  # False: an export that loads and predicts only (fit and save refuse)
    learns: bool = False  # the tiny model separates the three topics well above chance
    multi_label: bool | None = None  # takes label sets (None: as its class says); False: refuses them clearly

    def config(self, base_dir: Path | None) -> ModelConfig:
        return ModelConfig(module_path=self.module_path, class_name=self.class_name,
                           model_name=None if base_dir is None else str(base_dir), training_arguments=self.arguments)


FAMILIES = [
    Family("tfidf", "models.tfidf_linear.model", "TfidfLinearClassifier", {"C": 10.0}, learns=True),
    Family("tfidf_svm", "models.tfidf_linear.model", "TfidfLinearClassifier", {"classifier": "linear_svm"},
           learns=True, multi_label=False),
    Family("ensemble", "models.ensemble.model", "EnsembleClassifier",
           {"members": ["tfidf_logreg", "tfidf_svm"], "combiner": "greedy"}, learns=True),
    Family("ensemble_stacking", "models.ensemble.model", "EnsembleClassifier",
           {"members": ["tfidf_logreg", "tfidf_svm"], "combiner": "stacking"}, learns=True),
    Family("encoder", "models.hf_encoder.model", "HFEncoderClassifier", ENCODER_ARGS,
           base=lambda d: build_tiny_bert(d / "bert"), learns=True),
    Family("encoder_lora", "models.hf_encoder.model", "HFEncoderClassifier",
           {**ENCODER_ARGS, "learning_rate": 2e-2, "peft": {"r": 4, "alpha": 8, "save": "adapter"}},
           base=lambda d: build_tiny_bert(d / "bert")),
    Family("setfit", "models.few_shot.model", "SetFitClassifier",
           {"num_iterations": 4, "max_steps": 20, "batch_size": 8, "body_learning_rate": 1e-3, "max_length": 24,
            "head_c": 10.0, "num_threads": 1}, base=lambda d: build_tiny_bert(d / "bert"), learns=True),
    Family("frozen_encoder", "models.frozen_encoder.model", "FrozenEncoderClassifier", {"max_length": 24, "C": 100.0},
           base=lambda d: build_tiny_bert(d / "bert"), learns=True),
    Family("llm_prompt", "models.llm_prompt.model", "LlmPromptClassifier", {"shots_per_label": 1, "batch_size": 4},
           base=lambda d: build_tiny_causal_lm(d / "llm")),
    Family("llm_sft", "models.llm_sft.model", "LlmSftClassifier",
           {"epochs": 2, "learning_rate": 0.01, "per_device_batch_size": 16, "max_length": 128, "lora_r": 4,
            "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": "all-linear"},
           base=lambda d: build_tiny_causal_lm(d / "llm")),
    Family("onnx_export", "models.onnx_encoder.model", "OnnxEncoderClassifier", {}, trains=False),
]
TRAINABLE = [f for f in FAMILIES if f.trains]


def _context(tmp: Path, seed: int = 7) -> FitContext:
    tmp.mkdir(parents=True, exist_ok=True)
    return FitContext(seed=seed, device="cpu", show_progress=False, work_dir=tmp)


def _build(family: Family, base_dir: Path | None) -> ModelInterface:
    named = resolve(family.config(base_dir), name=family.name, source=f"contract:{family.name}")
    return named.build()


def _export(tmp: Path) -> Path:
    """A tiny encoder trained here and exported to fp32 ONNX: the folder OnnxEncoderClassifier loads."""
    encoder = next(f for f in FAMILIES if f.name == "encoder")
    model = _build(encoder, encoder.base(tmp)).fit(TRAIN, VAL, labels=LABELS, context=_context(tmp / "work"))
    out = tmp / "onnx"
    out.mkdir()
    facts = model.export_onnx(out, precision="fp32", calibration=TextDataset(TEXTS[:8]), check=TEST,
                              min_agreement=1.0)
    assert (facts["module_path"], facts["class_name"]) == ("models.onnx_encoder.model", "OnnxEncoderClassifier")
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, tuple[ModelInterface, Path | None]]:
    """Each family fitted once on TRAIN (or, for the export, loaded), with the base folder it was built from."""
    models = {}
    for family in FAMILIES:
        tmp = tmp_path_factory.mktemp(family.name)
        if family.trains:
            base = family.base(tmp) if family.base else None
            model = _build(family, base)
            returned = model.fit(TRAIN, VAL, labels=LABELS, context=_context(tmp / "work"))
            assert returned is model, f"{family.name}: fit must return self"
            models[family.name] = (model, base)
        else:
            folder = _export(tmp)
            cls = resolve(family.config(None), name=family.name, source="contract").model_class
            models[family.name] = (cls.load(folder, family.config(None), device="cpu"), folder)
    return models


def _check_probabilities(proba: np.ndarray, n: int) -> None:
    assert isinstance(proba, np.ndarray)
    assert proba.shape == (n, len(LABELS))
    assert np.isfinite(proba).all() and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_construction_does_no_work(family, tmp_path):
    """The constructor stores the config: a model_name that does not exist is not looked at until fit."""
    model = _build(family, tmp_path / "not-there")
    assert model.labels == []
    with pytest.raises(ModelError):
        model.predict_proba(TEST)
    assert not (tmp_path / "not-there").exists()


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_predict_proba_is_one_row_per_text_and_one_column_per_label(family, fitted):
    model, _ = fitted[family.name]
    assert list(model.labels) == LABELS
    _check_probabilities(model.predict_proba(TEST), len(TEST))
    _check_probabilities(model.predict_proba(TextDataset(TEST.texts[:1])), 1)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.learns], ids=lambda f: f.name)
def test_columns_follow_labels(family, fitted):
    """Read in the given label order, the columns agree with the truth better than in any other order,
    and clearly above chance (1/3): a model that learned the topics but mixed up its columns would not."""
    from itertools import permutations

    model, _ = fitted[family.name]
    best = model.predict_proba(TRAIN).argmax(axis=1)
    truth = np.asarray(TRAIN.labels)
    accuracy = {order: float((np.asarray(order)[best] == truth).mean()) for order in permutations(LABELS)}
    assert accuracy[tuple(LABELS)] == max(accuracy.values()) and accuracy[tuple(LABELS)] >= 0.5, accuracy


@pytest.mark.parametrize("family", TRAINABLE, ids=lambda f: f.name)
def test_a_class_missing_from_train_still_gets_its_column(family, tmp_path):
    base = family.base(tmp_path) if family.base else None
    model = _build(family, base).fit(TWO_CLASS_TRAIN, labels=LABELS, context=_context(tmp_path / "work"))
    assert list(model.labels) == LABELS
    _check_probabilities(model.predict_proba(TEST), len(TEST))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_save_then_load_gives_the_same_probabilities(family, fitted, tmp_path):
    model, folder = fitted[family.name]
    config = family.config(folder)
    cls = type(model)
    if family.trains:
        saved = tmp_path / "saved"
        saved.mkdir()
        model.save(saved)
    else:
        with pytest.raises(ModelError):
            model.save(tmp_path)
        saved = folder
    reloaded = cls.load(saved, config, device="cpu")
    assert list(reloaded.labels) == LABELS
    np.testing.assert_allclose(reloaded.predict_proba(TEST), model.predict_proba(TEST), atol=1e-6)


@pytest.mark.parametrize("family", TRAINABLE, ids=lambda f: f.name)
def test_the_same_seed_gives_the_same_probabilities(family, fitted, tmp_path):
    model, base = fitted[family.name]
    again = _build(family, base).fit(TRAIN, VAL, labels=LABELS, context=_context(tmp_path / "work"))
    np.testing.assert_array_equal(again.predict_proba(TEST), model.predict_proba(TEST))


def test_an_export_refuses_to_train(fitted):
    model, _ = fitted["onnx_export"]
    with pytest.raises(ModelError):
        model.fit(TRAIN, labels=LABELS)


def test_every_model_package_is_covered():
    """A model package under models/ with a ModelInterface must be listed in FAMILIES."""
    from mlops.core.plugins import available_model_modules

    covered = {f.module_path for f in FAMILIES}
    assert set(available_model_modules()) - {"models.hf_common.model"} <= covered


# --- multi-label: families that take label sets pass the same checks on them; the others refuse them ---------------

ML_TEXTS, ML_SETS = multi_topic_data(150, seed=9)
ML_LABELS = ["food", "sports", "tech"]
ML_TRAIN, ML_VAL = TextDataset(ML_TEXTS[:100], ML_SETS[:100]), TextDataset(ML_TEXTS[100:125], ML_SETS[100:125])
ML_TEST = TextDataset(ML_TEXTS[125:], ML_SETS[125:])
#: A sigmoid per label starts learning later than a softmax on these tiny models: more epochs.
ML_ARGUMENTS = {"encoder": {"epochs": 40}, "encoder_lora": {"epochs": 40}}


@pytest.mark.parametrize("family", TRAINABLE, ids=lambda f: f.name)
def test_label_sets_are_learned_or_refused(family, tmp_path):
    from mlops.core.multilabel import multi_label_metrics
    from mlops.experiments.fold import fit_and_predict

    base = family.base(tmp_path) if family.base else None
    config = family.config(base)
    config = config.model_copy(update={"training_arguments": {**config.training_arguments,
                                                              **ML_ARGUMENTS.get(family.name, {})}})
    named = resolve(config, name=family.name, source=f"contract:{family.name}")
    if not (named.model_class.supports_multi_label if family.multi_label is None else family.multi_label):
        with pytest.raises(ModelError, match="multi-label"):
            fit_and_predict(named, ML_TRAIN, ML_VAL, ML_TEST, ML_LABELS, _context(tmp_path / "work"))
        return
    outcome = fit_and_predict(named, ML_TRAIN, ML_VAL, ML_TEST, ML_LABELS, _context(tmp_path / "work"))
    proba = outcome.proba
    assert proba.shape == (len(ML_TEST), 3) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent per label, not a softmax
    assert len(outcome.thresholds) == 3 and all(0 < t < 1 for t in outcome.thresholds)
    if family.learns:
        score = multi_label_metrics(ML_TEST.labels, proba, ML_LABELS, thresholds=outcome.thresholds)["micro_f1"]
        every = multi_label_metrics(ML_TEST.labels, np.ones_like(proba), ML_LABELS)["micro_f1"]  # all labels, always
        assert score >= every + 0.1, (score, every)
    saved = tmp_path / "saved"
    saved.mkdir()
    outcome.model.save(saved)
    reloaded = type(outcome.model).load(saved, config, device="cpu")
    np.testing.assert_allclose(reloaded.predict_proba(ML_TEST), proba, atol=1e-6)
    again = fit_and_predict(named, ML_TRAIN, ML_VAL, ML_TEST, ML_LABELS, _context(tmp_path / "again"))
    np.testing.assert_array_equal(again.proba, proba)
    if family.name == "encoder":  # the ONNX export keeps the sigmoid (fp32 only)
        out = tmp_path / "onnx"
        out.mkdir()
        facts = outcome.model.export_onnx(out, precision="fp32", calibration=TextDataset(ML_TEXTS[:8]),
                                          check=ML_TEST, min_agreement=1.0)
        runtime = ModelConfig(module_path=facts["module_path"], class_name=facts["class_name"])
        export = resolve(runtime, name="onnx", source="contract").model_class.load(out, runtime, device="cpu")
        np.testing.assert_allclose(export.predict_proba(ML_TEST), proba, atol=1e-4)
        with pytest.raises(ModelError, match="fp32"):
            outcome.model.export_onnx(tmp_path, precision="int8", calibration=TextDataset(ML_TEXTS[:8]),
                                      check=ML_TEST, min_agreement=1.0)
