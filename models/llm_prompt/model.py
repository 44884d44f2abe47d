"""A causal LM as a zero/few-shot classifier: no weight updates, the label is read by scoring.

``fit`` picks few-shot examples from the fold's own training data (never its test rows), builds the
prompt and, with ``calibration="content_free"``, measures the model's prior for each label on a
content-free input ("N/A"; Zhao et al., 2021) to subtract later. ``predict_proba`` scores the
log-likelihood of every label after each row's prompt and returns the softmax over labels, so every
row gets a label and probabilities. ``save`` writes the examples, template, labels and calibration
as JSON and names the base model (its weights are not copied).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.text_dataset import TextDataset
from models.llm_prompt.prompting import PromptTemplate, RenderedPrompt, prompt_inputs, render

logger = logging.getLogger(__name__)

STATE_FILE = "llm_prompt.json"


class PromptTrainingArguments(TrainingArguments):
    template: PromptTemplate = Field(default_factory=PromptTemplate)
    shots_per_label: int = Field(default=2, ge=0, description="few-shot examples per label drawn from train")
    max_example_chars: int = Field(default=200, gt=0, description="prefer few-shot examples up to this length")
    length_normalize: bool = Field(default=True, description="score labels by mean log-prob per token")
    calibration: Literal["none", "content_free"] = "content_free"
    content_free_text: str = "N/A"
    batch_size: int = Field(default=16, gt=0)
    max_text_tokens: int = Field(default=256, gt=8)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


def choose_examples(
    texts: Sequence[str], labels: Sequence[str], label_set: Sequence[str], per_label: int, max_chars: int, seed: int
) -> list[tuple[str, str]]:
    """``per_label`` examples of each label (shorter than ``max_chars`` where possible), shuffled, seeded."""
    rng = random.Random(seed)
    chosen: list[tuple[str, str]] = []
    for label in label_set:
        rows = [t.strip() for t, y in zip(texts, labels, strict=True) if y == label and t.strip()]
        short = [t for t in rows if len(t) <= max_chars]
        pool = short if len(short) >= per_label else rows
        chosen += [(t, label) for t in rng.sample(pool, min(per_label, len(pool)))]
    rng.shuffle(chosen)
    return chosen


class LlmPromptClassifier(ModelInterface):
    """Few-shot prompted causal LM; labels scored by log-likelihood."""

    training_arguments_class = PromptTrainingArguments
    state_file = STATE_FILE

    def __init__(self, config: ModelConfig, training_arguments: PromptTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self.examples: list[tuple[str, str]] = []
        self.bias: list[float] | None = None
        self._model = None
        self._tokenizer = None
        self._source: str | None = None
        self._device: str | None = None
        self._prompt: RenderedPrompt | None = None

    # -- helpers shared with the fine-tuned subclass -------------------------------------------
    @property
    def base_model_name(self) -> str:
        from models.llm_prompt.loading import OFFLINE_DEFAULT

        return self.config.model_name or OFFLINE_DEFAULT

    @property
    def args(self):
        return self.training_arguments

    def _ensure_model(self) -> None:
        if self._model is not None:
            return
        from models.hf_common.device import pick_device
        from models.llm_prompt.loading import load_causal_lm

        self._device = pick_device(self._device)
        self._model, self._tokenizer, self._source = load_causal_lm(
            self.base_model_name, device=self._device, dtype=self.args.dtype
        )

    def _render(self) -> RenderedPrompt:
        if self._prompt is None:
            try:
                self._prompt = render(self.args.template, self.labels, self.examples, self._tokenizer)
            except ValueError as exc:
                raise ModelError(f"cannot build the prompt: {exc}") from None
        return self._prompt

    def _score(self, texts: list[str]) -> np.ndarray:
        from models.llm_prompt.scoring import score_labels

        self._model.eval()
        sums, n_tokens = score_labels(
            self._model, self._tokenizer, self._render(), texts, self.labels,
            batch_size=self.args.batch_size, max_text_tokens=self.args.max_text_tokens,
        )
        return sums / n_tokens[None, :] if self.args.length_normalize else sums

    def _calibrate(self) -> None:
        if self.args.calibration == "content_free":
            self.bias = [float(v) for v in self._score([self.args.content_free_text])[0]]
        else:
            self.bias = None

    # -- ModelInterface ------------------------------------------------------------------------
    def fit(
        self,
        train: TextDataset,
        val: TextDataset | None = None,
        *,
        labels: Sequence[str],
        context: FitContext | None = None,
    ) -> LlmPromptClassifier:
        context = context or FitContext()
        self.labels = list(labels)
        if train.labels is None and self.args.shots_per_label > 0:
            raise ModelError("LlmPromptClassifier.fit needs labelled training data to draw few-shot examples from.")
        self._device = context.device
        if self.args.shots_per_label > 0:
            self.examples = choose_examples(
                prompt_inputs(train), [str(y) for y in train.labels], self.labels,
                self.args.shots_per_label, self.args.max_example_chars, context.seed,
            )
        logger.info("prompting %s with %d few-shot examples from the training data (set with shots_per_label)",
                    self.base_model_name, len(self.examples))
        self._ensure_model()
        self._prompt = None
        self._calibrate()
        return self

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if not self.labels:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        if len(data) == 0:
            return np.zeros((0, len(self.labels)))
        self._ensure_model()
        scores = self._score(prompt_inputs(data))
        if self.bias is not None:
            scores = scores - np.asarray(self.bias)[None, :]
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def _state(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model_name,
            "labels": self.labels,
            "examples": [{"text": t, "label": y} for t, y in self.examples],
            "calibration_bias": self.bias,
            "training_arguments": self.args.model_dump(mode="json"),
        }

    def save(self, directory: Path) -> None:
        if not self.labels:
            raise ModelError("the model is not trained yet: call fit() before save().")
        (directory / self.state_file).write_text(json.dumps(self._state(), indent=2, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def _read_state(cls, directory: Path) -> dict[str, Any]:
        path = Path(directory) / cls.state_file
        if not path.is_file():
            raise ModelError(f"{directory} has no {cls.state_file}; it is not a saved {cls.__name__}.")
        return json.loads(path.read_text(encoding="utf-8"))

    @classmethod
    def _from_state(cls, state: dict[str, Any], config: ModelConfig, device: str | None):
        config = config.model_copy(update={
            "model_name": state["base_model"], "training_arguments": state["training_arguments"],
        })
        model = cls(config)
        model.labels = list(state["labels"])
        model.examples = [(e["text"], e["label"]) for e in state.get("examples", [])]
        model.bias = state.get("calibration_bias")
        model._device = device
        return model

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> LlmPromptClassifier:
        return cls._from_state(cls._read_state(directory), config, device)

    def runtime_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"base_model": self.base_model_name, "few_shot_examples": len(self.examples)}
        if self._model is not None:
            info.update(device=self._device, dtype=str(next(self._model.parameters()).dtype), source=self._source)
        return info
