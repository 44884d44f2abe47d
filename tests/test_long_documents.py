"""truncation head_tail and windows: which tokens a long text keeps, in the HF encoder and in its ONNX export alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.hf import build_tiny_bert, topic_data
from mlops.core.config import ModelConfig
from mlops.core.model_interface import FitContext
from mlops.core.text_dataset import TextDataset
from models.hf_common.truncation import head_tail_cut, head_tokens_for
from models.hf_common.windows import Windows, window_starts

LABELS = ["tech", "food", "sports"]


def test_head_tail_cut_keeps_the_ends_and_the_length():
    ids = list(range(100))  # 0 plays CLS, 99 plays SEP
    cut = head_tail_cut(ids, 16, 4)
    assert len(cut) == 16
    assert cut[:5] == [0, 1, 2, 3, 4]  # CLS and the first 4 content tokens
    assert cut[5:] == list(range(89, 100))  # the last 10 content tokens and SEP
    assert head_tail_cut(ids[:16], 16, 4) == ids[:16]  # a text that fits is untouched
    assert head_tokens_for("head", None, 512) is None
    assert head_tokens_for("head_tail", None, 512) == 128  # Sun et al.: 128 of 512
    assert head_tokens_for("head_tail", 500, 64) == 61


def _config(base: Path, truncation: str) -> ModelConfig:
    return ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier", model_name=str(base),
                       training_arguments={"epochs": 6, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                                           "max_length": 16, "num_threads": 1, "precision": "fp32",
                                           "early_stopping_patience": None, "truncation": truncation,
                                           "head_tokens": 4})


def _trained(tmp_path_factory, texts: list[str], labels: list[str], truncation: str):
    """A tiny BERT trained with ``truncation`` and saved as a model folder: (model, folder, texts, labels)."""
    from mlops.core.model_folder import write_model_descriptor
    from models.hf_encoder.model import HFEncoderClassifier

    base = build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")
    config = _config(base, truncation)
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels), labels=LABELS,
                                            context=FitContext(seed=0, show_progress=False))
    folder = tmp_path_factory.mktemp("final") / "model"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tiny", config, LABELS)
    (folder / "manifest.json").write_text(json.dumps({"created_at": "test", "input_file": None}))
    return model, folder, texts, labels


@pytest.fixture(scope="module")
def head_tail_model(tmp_path_factory):
    texts, labels = topic_data(200, seed=1)
    # the topic words sit at the end of a long filler: a head-only cut never sees them
    return _trained(tmp_path_factory, ["filler " * 30 + text for text in texts], labels, "head_tail")


def test_the_encoder_reads_head_and_tail(head_tail_model):
    from models.hf_encoder.model import HFEncoderClassifier

    model, _, texts, labels = head_tail_model
    encoded = model.encode([texts[0]], None, np.array([0]))
    whole = model.tokenizer(texts[0])["input_ids"]
    assert encoded["input_ids"][0].tolist() == head_tail_cut(whole, 16, 4)
    truth = [LABELS.index(y) for y in labels]
    head_only = HFEncoderClassifier(_config(Path(model.config.model_name), "head")).fit(
        TextDataset(texts, labels), labels=LABELS, context=FitContext(seed=0, show_progress=False))
    accuracy = (model.predict_proba(TextDataset(texts)).argmax(1) == truth).mean()
    blind = (head_only.predict_proba(TextDataset(texts)).argmax(1) == truth).mean()
    assert accuracy > blind + 0.2  # it learned from words that only the tail holds; the head is all filler


def test_the_onnx_export_cuts_the_same_tokens(head_tail_model, tmp_path, monkeypatch):
    import pandas as pd

    from mlops.deploy.export import export_model
    from mlops.core.model_folder import load_model

    monkeypatch.setattr("mlops.core.model_folder._gpu_present", lambda: False)
    model, folder, texts, labels = head_tail_model
    rows = tmp_path / "rows.csv"
    more, more_labels = topic_data(200, seed=3)
    pd.DataFrame({"text": texts + ["filler " * 30 + t for t in more], "label": labels + more_labels}).to_csv(
        rows, index=False)
    export_model(folder, precision="fp32", data_file=rows, rows=300)
    assert json.loads((folder / "onnx" / "export.json").read_text())["head_tokens"] == 4
    onnx = load_model(folder, runtime="onnx")
    sample = TextDataset(texts[:40])
    np.testing.assert_allclose(onnx.predict_proba(sample), model.predict_proba(sample), atol=1e-4)


# --- windows -------------------------------------------------------------------------------------------------
def test_windows_cover_every_token_and_keep_head_and_tail_when_capped():
    for n in range(1, 80):
        starts, capped = window_starts(n, 14, 3, 8)
        covered = set()
        for start in starts:
            assert 0 <= start and start + min(14, n) <= n
            covered |= set(range(start, min(start + 14, n)))
        if not capped:
            assert covered == set(range(n))
            assert all(b - a <= 14 - 3 for a, b in zip(starts, starts[1:]))  # neighbours share >= 3 tokens
        else:
            assert len(starts) == 8 and starts[0] == 0 and starts[-1] == n - 14
    assert window_starts(10, 14, 3, 8) == ([0], False)


def test_pooling_is_the_mean_of_the_windows_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 3)) * 3
    owner = np.array([0, 0, 0, 1, 2, 2, 2])
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean = np.stack([logits[owner == i].mean(0) for i in range(3)])
    np.testing.assert_allclose(Windows.pool(logits, owner, 3, kind="logits"), mean)
    np.testing.assert_allclose(Windows.pool(softmax, owner, 3, kind="softmax"),
                               np.exp(mean) / np.exp(mean).sum(1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(Windows.pool(1 / (1 + np.exp(-logits)), owner, 3, kind="sigmoid"),
                               1 / (1 + np.exp(-mean)), atol=1e-12)


def _middle(texts):  # the topic words sit in the middle of long filler: neither end holds them
    return ["the " * 20 + text + " the" * 20 for text in texts]


@pytest.fixture(scope="module")
def windows_model(tmp_path_factory):
    texts, labels = topic_data(200, seed=1)
    return _trained(tmp_path_factory, _middle(texts), labels, "windows")


def test_windows_read_the_middle_of_a_long_text(windows_model):
    from models.hf_encoder.model import HFEncoderClassifier

    model, _, texts, labels = windows_model
    windows, owner, cut = model.windows.split(texts[:5])
    assert cut == 0 and len(windows) > 5 and sorted(set(owner.tolist())) == [0, 1, 2, 3, 4]
    assert all(len(model.tokenizer(w)["input_ids"]) <= 16 for w in windows)  # each fits max_length
    assert model.runtime_info()["windows"]["train_windows"] > 3 * len(texts)
    truth = [LABELS.index(y) for y in labels]
    head_tail = HFEncoderClassifier(_config(Path(model.config.model_name), "head_tail")).fit(
        TextDataset(texts, labels), labels=LABELS, context=FitContext(seed=0, show_progress=False))
    accuracy = (model.predict_proba(TextDataset(texts)).argmax(1) == truth).mean()
    blind = (head_tail.predict_proba(TextDataset(texts)).argmax(1) == truth).mean()
    assert accuracy > blind + 0.2, (accuracy, blind)


def test_the_onnx_export_pools_the_same_windows(windows_model, tmp_path, monkeypatch):
    import pandas as pd

    from mlops.core.model_folder import load_model
    from mlops.deploy.export import export_model

    monkeypatch.setattr("mlops.core.model_folder._gpu_present", lambda: False)
    model, folder, texts, labels = windows_model
    rows = tmp_path / "rows.csv"
    more, more_labels = topic_data(200, seed=3)
    pd.DataFrame({"text": texts + _middle(more), "label": labels + more_labels}).to_csv(rows, index=False)
    export_model(folder, precision="fp32", data_file=rows, rows=300)
    assert json.loads((folder / "onnx" / "export.json").read_text())["windows"] == {"overlap": 3, "max_windows": 8}
    onnx = load_model(folder, runtime="onnx")
    sample = TextDataset(texts[:40] + ["short one", "filler " * 200])  # no window, and more than max_windows
    np.testing.assert_allclose(onnx.predict_proba(sample), model.predict_proba(sample), atol=1e-4)


def test_windows_that_re_tokenize_long_are_not_reported_as_texts_to_lengthen(caplog):
    """Under windows, the few windows that re-tokenize over max_length lose only tokens the next window reads:
    an info line that says so, not the warning that tells the user to raise max_length."""
    import logging

    from models.hf_common.training import log_truncation

    with caplog.at_level(logging.INFO, logger="models.hf_common.training"):
        log_truncation("training", 3, 300, 64, windows=True)
        log_truncation("training", 5, 100, 64)
    windows, texts = caplog.records
    assert windows.levelno == logging.INFO and "next window reads them" in windows.getMessage()
    assert "3 of 300 training windows" in windows.getMessage()
    assert texts.levelno == logging.WARNING and "raise training_arguments.max_length" in texts.getMessage()
