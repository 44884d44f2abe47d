"""truncation: head_tail: which tokens a long text keeps, in the HF encoder and in its ONNX export alike."""

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


@pytest.fixture(scope="module")
def head_tail_model(tmp_path_factory):
    from mlops.core.model_folder import write_model_descriptor
    from models.hf_encoder.model import HFEncoderClassifier

    base = build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")
    texts, labels = topic_data(200, seed=1)
    # the topic words sit at the end of a long filler: a head-only cut never sees them
    texts = ["filler " * 30 + text for text in texts]
    config = _config(base, "head_tail")
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels), labels=LABELS,
                                            context=FitContext(seed=0, show_progress=False))
    folder = tmp_path_factory.mktemp("final") / "model"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tiny", config, LABELS)
    (folder / "manifest.json").write_text(json.dumps({"created_at": "test", "input_file": None}))
    return model, folder, texts, labels


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
