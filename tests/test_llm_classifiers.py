"""LLM classifiers on tiny causal LMs built from a config: label scoring, few-shot choice, save/load, LoRA SFT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.llm import build_tiny_causal_lm
from mlops.core.config import ModelConfig, load_model_config_file
from mlops.core.errors import ConfigError
from mlops.core.model_interface import FitContext
from mlops.core.plugins import resolve_model_class, validate_training_arguments
from mlops.core.text_dataset import TextDataset

LABELS = ["negative", "positive"]
TRAIN = TextDataset(
    texts=["a great film with a moving story", "wonderful and warm", "a dull mess", "boring and far too long",
           "I loved every minute", "the jokes fall flat"],
    labels=["positive", "positive", "negative", "negative", "positive", "negative"],
)
TEST = TextDataset(texts=["the plot is weak", "fine acting", "a film about a family"],
                   labels=["negative", "positive", "positive"])


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("llama"), arch="llama", tokenizer="bpe")


def _config(module: str, cls: str, model_dir: Path, **args) -> ModelConfig:
    return ModelConfig(module_path=module, class_name=cls, model_name=str(model_dir), training_arguments=args)


@pytest.mark.parametrize(("arch", "tokenizer"), [("llama", "bpe"), ("gemma3", "bpe"), ("llama", "word")])
def test_label_scores_equal_full_sequence_log_likelihood(tmp_path, arch, tokenizer):
    """Cached-prefix, batched scoring must equal log p(label | prompt) from one plain forward pass."""
    import torch

    from models.llm_prompt.loading import load_causal_lm
    from models.llm_prompt.prompting import PromptTemplate, render
    from models.llm_prompt.scoring import label_token_ids, score_labels

    model, tok, _ = load_causal_lm(str(build_tiny_causal_lm(tmp_path, arch=arch, tokenizer=tokenizer)), device="cpu")
    labels = ["negative", "positive", "neutral"]
    prompt = render(PromptTemplate(), labels, [("a great film", "positive"), ("a dull mess", "negative")], tok)
    texts = ["the plot is weak", "wonderful and warm, a great film with a moving story " * 3, "ok"]
    sums, n_tokens = score_labels(model, tok, prompt, texts, labels, batch_size=2)
    label_ids = label_token_ids(tok, labels, prompt.label_prefix)
    assert list(n_tokens) == [len(t) for t in label_ids]
    if tokenizer == "bpe":
        assert max(n_tokens) > 1  # the multi-token path is exercised
    for i, text in enumerate(texts):
        context = tok(prompt.prefix)["input_ids"] + tok(prompt.suffix(text), add_special_tokens=False)["input_ids"]
        for j, ids in enumerate(label_ids):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([context + ids])).logits[0].float(), -1)
            expected = sum(logp[len(context) - 1 + k, t].item() for k, t in enumerate(ids))
            assert sums[i, j] == pytest.approx(expected, abs=1e-4)


def test_prompted_classifier_fit_predict_save_load(tmp_path, tiny_llama):
    from models.llm_prompt.model import STATE_FILE, LlmPromptClassifier

    config = _config("models.llm_prompt.model", "LlmPromptClassifier", tiny_llama, shots_per_label=2, batch_size=2)
    model = LlmPromptClassifier(config).fit(TRAIN, labels=LABELS, context=FitContext(seed=3, device="cpu"))
    # few-shot examples come from the training data only, two per label
    assert len(model.examples) == 4
    assert {t for t, _ in model.examples} <= set(TRAIN.texts)
    assert not {t for t, _ in model.examples} & set(TEST.texts)
    assert sorted(y for _, y in model.examples) == ["negative", "negative", "positive", "positive"]
    assert model.bias is not None and len(model.bias) == 2  # content-free calibration measured at fit

    proba = model.predict_proba(TEST)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba > 0).all()

    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE]  # no copy of the base weights
    state = json.loads((out / STATE_FILE).read_text())
    assert state["base_model"] == str(tiny_llama)
    assert state["labels"] == LABELS
    assert [(e["text"], e["label"]) for e in state["examples"]] == model.examples
    assert state["training_arguments"]["template"]["query_template"] == "Review: {text}\nSentiment:"

    # load with a config whose arguments differ: what was saved wins
    other = _config("models.llm_prompt.model", "LlmPromptClassifier", tiny_llama, shots_per_label=5)
    loaded = LlmPromptClassifier.load(out, other, device="cpu")
    assert loaded.examples == model.examples
    np.testing.assert_allclose(loaded.predict_proba(TEST), proba, atol=1e-6)


def test_same_seed_same_examples_and_calibration_changes_probabilities(tiny_llama):
    from models.llm_prompt.model import LlmPromptClassifier

    def fitted(seed: int, calibration: str) -> LlmPromptClassifier:
        config = _config("models.llm_prompt.model", "LlmPromptClassifier", tiny_llama, calibration=calibration)
        return LlmPromptClassifier(config).fit(TRAIN, labels=LABELS, context=FitContext(seed=seed, device="cpu"))

    a, b = fitted(7, "content_free"), fitted(7, "none")
    assert a.examples == b.examples
    assert b.bias is None
    raw, calibrated = b.predict_proba(TEST), a.predict_proba(TEST)
    # calibration divides out the label prior measured on "N/A": p_cal ∝ p / p(label | "N/A")
    bias = np.exp(np.asarray(a.bias))
    expected = raw / bias
    np.testing.assert_allclose(calibrated, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)


def test_zero_shot_and_label_absent_from_train(tiny_llama):
    from models.llm_prompt.model import LlmPromptClassifier

    config = _config("models.llm_prompt.model", "LlmPromptClassifier", tiny_llama, shots_per_label=1)
    labels = ["negative", "neutral", "positive"]
    model = LlmPromptClassifier(config).fit(TRAIN, labels=labels, context=FitContext(device="cpu"))
    assert sorted(y for _, y in model.examples) == ["negative", "positive"]  # no neutral rows in train
    assert model.predict_proba(TEST).shape == (3, 3)
    zero = LlmPromptClassifier(_config("models.llm_prompt.model", "LlmPromptClassifier", tiny_llama, shots_per_label=0))
    zero.fit(TextDataset(texts=["x"]), labels=labels, context=FitContext(device="cpu"))  # unlabelled is fine
    assert zero.examples == []


def test_sft_lora_round_trip_learns_the_labels(tmp_path, tiny_llama):
    from models.llm_sft.model import ADAPTER_DIR, STATE_FILE, LlmSftClassifier

    texts = [f"{w} {n}" for n in ("film", "story", "acting", "plot") for w in ("great", "awful")]
    labels = ["positive" if t.startswith("great") else "negative" for t in texts]
    train = TextDataset(texts=texts, labels=labels)
    config = _config(
        "models.llm_sft.model", "LlmSftClassifier", tiny_llama, epochs=30, learning_rate=0.02,
        per_device_batch_size=8, max_length=64, lora_r=4, lora_alpha=8, lora_dropout=0.0,
        lora_target_modules="all-linear", logging_steps=5,
    )
    untrained = LlmSftClassifier(config)
    untrained.labels = LABELS
    untrained._device = "cpu"
    untrained._ensure_model()
    before = untrained.predict_proba(train)

    model = LlmSftClassifier(config).fit(train, labels=LABELS, context=FitContext(seed=0, device="cpu",
                                                                                  work_dir=tmp_path / "work"))
    after = model.predict_proba(train)
    truth = np.array([LABELS.index(y) for y in labels])
    p_true_before = before[np.arange(len(truth)), truth].mean()
    p_true_after = after[np.arange(len(truth)), truth].mean()
    assert p_true_after > p_true_before + 0.2
    assert (after.argmax(axis=1) == truth).mean() == 1.0
    losses = [e["loss"] for e in model.train_log if "loss" in e]
    assert losses and losses[-1] < losses[0]

    out = tmp_path / "saved"
    out.mkdir()
    model.save(out)
    assert (out / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert not list(out.rglob("model.safetensors"))  # the base weights are named, not copied
    state = json.loads((out / STATE_FILE).read_text())
    assert state["base_model"] == str(tiny_llama) and state["labels"] == LABELS and state["examples"] == []
    loaded = LlmSftClassifier.load(out, config, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(train), after, atol=1e-5)


LLM_CONFIGS = ["gemma270m_prompt.json", "gemma1b_it_prompt.json", "gemma270m_sft.json", "gemma1b_it_sft.json",
               "bielik_1_5b_sft.json"]


@pytest.mark.parametrize("name", LLM_CONFIGS)
def test_llm_configs_validate(name):
    path = Path(__file__).resolve().parents[1] / "model_configs" / name
    config = load_model_config_file(path)
    cls = resolve_model_class(config, source=name)
    validate_training_arguments(config, cls, source=name)
    assert config.model_name


def test_bad_template_is_a_config_error():
    from models.llm_prompt.model import LlmPromptClassifier

    config = ModelConfig(module_path="models.llm_prompt.model", class_name="LlmPromptClassifier",
                         training_arguments={"template": {"query_template": "Review:\nSentiment:"}})
    with pytest.raises(ConfigError, match="query_template must contain"):
        validate_training_arguments(config, LlmPromptClassifier)
    config = ModelConfig(module_path="models.llm_sft.model", class_name="LlmSftClassifier",
                         training_arguments={"shots_per_label": 2})
    from models.llm_sft.model import LlmSftClassifier

    with pytest.raises(ConfigError, match="shots_per_label"):
        validate_training_arguments(config, LlmSftClassifier)


def test_unreachable_model_is_a_model_error(tmp_path, monkeypatch):
    from mlops.core.errors import ModelError
    from models.llm_prompt.model import LlmPromptClassifier

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = ModelConfig(module_path="models.llm_prompt.model", class_name="LlmPromptClassifier",
                         model_name=str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError):
        LlmPromptClassifier(config).fit(TRAIN, labels=LABELS, context=FitContext(device="cpu"))


@pytest.mark.slow
def test_offline_gemma_prompted_classifier_reads_sentiment(mr_rows):
    from models.llm_prompt.model import LlmPromptClassifier

    config = load_model_config_file(Path(__file__).resolve().parents[1] / "model_configs" / "gemma270m_prompt.json")
    rows = mr_rows.sample(n=80, random_state=1)
    train, test = rows.iloc[:40], rows.iloc[40:]
    model = LlmPromptClassifier(config).fit(TextDataset(list(train.text), list(train.label)), labels=LABELS,
                                            context=FitContext(seed=0, device="cpu"))
    proba = model.predict_proba(TextDataset(list(test.text)))
    accuracy = (np.asarray(LABELS)[proba.argmax(axis=1)] == test.label.to_numpy()).mean()
    assert accuracy >= 0.65  # 0.84 on 300 held-out rows in our measurement; chance is 0.5
