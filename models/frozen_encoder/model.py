"""A frozen sentence encoder and a logistic regression on its embeddings: MiniLM's reading at TF-IDF's cost.

The encoder (the shipped all-MiniLM-L6-v2 by default) is not trained: each text is embedded once (mean-pooled
last hidden states, L2-normalised, as sentence-transformers does) and a multinomial logistic regression is fitted
on the training rows' embeddings. A fit costs one pass of the encoder over the rows it has not embedded yet
plus a linear model, so the many trainings of ``learning-curve`` and ``active-learning-sim`` stay cheap:
embeddings are kept in memory per process (by encoder and text; at most ``CACHE_ROWS``), and a frozen encoder
gives a text the same embedding whatever else it is trained with.

Saved as the encoder's own folder (``save_pretrained``, safetensors) and the head's weights in safetensors with
its classes and settings in JSON: nothing pickled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mlops.core.class_balance import resolve_class_weight
from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.text_dataset import TextDataset
from models.hf_common.arithmetic import torch_arithmetic

logger = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
META_FILE = "frozen_encoder.json"
FORMAT_VERSION = 1
CACHE_ROWS = 200_000  # embeddings kept per process (384 floats each for MiniLM: about 300 MB at the cap)
_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


class FrozenEncoderArguments(TrainingArguments):
    max_length: int = Field(default=128, ge=8, description="tokens per text read by the encoder (longer ones are cut)")
    pooling: Literal["mean", "cls"] = "mean"
    batch_size: int = Field(default=64, ge=1, description="texts per encoder batch")
    C: float = Field(default=1.0, gt=0, description="inverse L2 strength of the logistic regression")
    class_weight: Literal["balanced", "auto"] | None = Field(
        default="auto", description="balanced: n / (k * count) per class; auto: balanced when the largest training "
        "class is more than 1.5x the smallest; null: unweighted")
    max_iter: int = Field(default=2000, ge=1)


class FrozenEncoderClassifier(ModelInterface):
    training_arguments_class = FrozenEncoderArguments
    training_arguments: FrozenEncoderArguments

    def __init__(self, config: ModelConfig, training_arguments: FrozenEncoderArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._embedder = None
        self._source = config.model_name or ""
        self._coef: np.ndarray | None = None
        self._intercept: np.ndarray | None = None
        self._classes: np.ndarray | None = None  # indices into self.labels of the classes the head saw
        self._info: dict[str, Any] = {}

    def _embedder_for(self, source: str, device: str | None):
        if self._embedder is None:
            from models.hf_encoder.embedding import pretrained_embedder

            args = self.training_arguments
            self._embedder = pretrained_embedder(source, device=device, batch_size=args.batch_size,
                                                 pooling=args.pooling, max_length=args.max_length)
            self._info.update(encoder=self._embedder.source, device=self._embedder.device)
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of ``texts``, from the process's cache where this encoder embedded them."""
        if self._embedder is None:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        args = self.training_arguments
        cache = _CACHE.setdefault((self._embedder.source, args.max_length, args.pooling), {})
        texts = [str(text) for text in texts]
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        found = {text: cache[text] for text in texts if text in cache}
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            started = time.perf_counter()
            vectors = self._embedder(missing)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            found.update(zip(missing, vectors, strict=True))
            if len(cache) + len(missing) > CACHE_ROWS:
                cache.clear()
            if len(missing) <= CACHE_ROWS:
                cache.update(zip(missing, vectors, strict=True))
            self._info["embed_seconds"] = round(self._info.get("embed_seconds", 0.0) + time.perf_counter() - started, 3)
            self._info["texts_embedded"] = self._info.get("texts_embedded", 0) + len(missing)
        return np.stack([found[text] for text in texts])

    def fit(self, train: TextDataset, val: TextDataset | None = None, *, labels: Sequence[str],
            context: FitContext | None = None) -> FrozenEncoderClassifier:
        from sklearn.linear_model import LogisticRegression

        context = context or FitContext()
        self.labels = [str(label) for label in labels]
        if train.text_pairs is not None:
            raise ModelError("FrozenEncoderClassifier embeds single texts; use an encoder config (minilm) for "
                             "sentence pairs.")
        if train.labels is None or not len(train):
            raise ModelError("FrozenEncoderClassifier.fit needs labelled, non-empty training data.")
        unknown = sorted(set(map(str, train.labels)) - set(self.labels))
        if unknown:
            raise ModelError(f"training labels {unknown[:10]} are not in the label set {self.labels}.")
        self._embedder_for(self.config.model_name, context.device)
        features = self.embed(train.texts)
        y = np.array([self.labels.index(str(label)) for label in train.labels])
        class_weight, reason = resolve_class_weight(self.training_arguments.class_weight, self.labels, y)
        self._info["class_weight"] = {"class_weight": class_weight, "reason": reason}
        args = self.training_arguments
        if len(np.unique(y)) < 2:
            self._coef, self._intercept, self._classes = np.zeros((1, features.shape[1])), np.zeros(1), np.unique(y)
            return self
        head = LogisticRegression(C=args.C, class_weight=class_weight, max_iter=args.max_iter,
                                  random_state=context.seed).fit(features, y)
        self._coef, self._intercept, self._classes = head.coef_, head.intercept_, head.classes_
        return self

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if self._coef is None:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        out = np.zeros((len(data), len(self.labels)))
        if not len(data):
            return out
        if len(self._classes) == 1:
            out[:, self._classes[0]] = 1.0
            return out
        scores = self.embed(data.texts) @ self._coef.T + self._intercept
        if scores.shape[1] == 1:  # binary: scikit-learn keeps one row of weights, for the second class
            proba = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            out[:, self._classes[0]], out[:, self._classes[1]] = 1.0 - proba, proba
            return out
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        out[:, self._classes] = exp / exp.sum(axis=1, keepdims=True)
        return out

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        if self._coef is None or self._embedder is None:
            raise ModelError("the model is not trained yet: call fit() first.")
        directory = Path(directory)
        self._embedder.module.save_pretrained(directory / ENCODER_DIR)
        self._embedder.tokenizer.save_pretrained(directory / ENCODER_DIR)
        save_file({"coef": np.ascontiguousarray(self._coef, dtype=np.float64),
                   "intercept": np.ascontiguousarray(self._intercept, dtype=np.float64)}, str(directory / HEAD_FILE))
        (directory / META_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "labels": self.labels, "classes": self._classes.tolist(),
            "encoder": self._info.get("encoder")}, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> FrozenEncoderClassifier:
        from safetensors.numpy import load_file

        directory = Path(directory)
        missing = [name for name in (META_FILE, HEAD_FILE, ENCODER_DIR) if not (directory / name).exists()]
        if missing:
            raise ModelError(f"{directory} is not a saved frozen-encoder model: {', '.join(missing)} missing.")
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{directory / META_FILE} has format {meta.get('format_version')!r}, expected "
                             f"{FORMAT_VERSION}; retrain the model with this version of the tool.")
        model = cls(config)
        model.labels = list(meta["labels"])
        head = load_file(str(directory / HEAD_FILE))
        model._coef, model._intercept = head["coef"], head["intercept"]
        model._classes = np.asarray(meta["classes"], dtype=np.int64)
        model._embedder_for(str(directory / ENCODER_DIR), device)
        return model

    @classmethod
    def arithmetic(cls, arguments: FrozenEncoderArguments, device: str | None,
                   runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        return torch_arithmetic(None, "fp32", device)

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)
