"""The LLM classifiers through the real CLI lifecycle, on a tiny causal LM built from a config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.llm import build_tiny_causal_lm

from helpers.cli import REVIEW_COLUMNS, generate_splits




@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"), arch="gemma3", tokenizer="bpe")


@pytest.mark.parametrize("kind", ["prompt", "sft"])
def test_llm_classifier_lifecycle(cli, small_csv: Path, tmp_path: Path, tiny_lm: Path, kind: str):
    if kind == "prompt":
        config = {"module_path": "models.llm_prompt.model", "class_name": "LlmPromptClassifier",
                  "model_name": str(tiny_lm), "training_arguments": {"shots_per_label": 1, "batch_size": 32}}
    else:
        config = {"module_path": "models.llm_sft.model", "class_name": "LlmSftClassifier",
                  "model_name": str(tiny_lm),
                  "training_arguments": {"max_steps": 2, "per_device_batch_size": 4, "max_length": 64,
                                         "lora_r": 2, "batch_size": 32}}
    config_path = tmp_path / f"tiny_{kind}.json"
    config_path.write_text(json.dumps(config))
    generate_splits(cli, "exp", small_csv, folds=2, seed=7, columns=REVIEW_COLUMNS)
    cli("run-backtesting", "--experiment-id", "exp", "--model-config-name", str(config_path))
    model_dir = tmp_path / "model"
    cli("train-final-model", "--experiment-id", "exp", "--model-config-name", str(config_path),
        "--model-output-dir", str(model_dir))
    info = json.loads((model_dir / "mlops_model.json").read_text())
    assert info["class_name"] == config["class_name"]
    assert (model_dir / f"llm_{kind}.json").is_file()
    if kind == "sft":
        assert (model_dir / "adapter" / "adapter_model.safetensors").is_file()
    new = tmp_path / "new.csv"
    pd.DataFrame({"text": ["a wonderful , moving film", "a dull , tedious mess", "fine"]}).to_csv(new, index=False)
    out = tmp_path / "pred.csv"
    cli("predict-new", "--model-path", str(model_dir), "--input-file", str(new), "--output-file", str(out))
    predictions = pd.read_csv(out)
    assert len(predictions) == 3 and set(predictions.predicted_label) <= {"negative", "positive"}
    proba = predictions[[c for c in predictions.columns if c.startswith("proba_")]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
