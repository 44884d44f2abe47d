"""Sentence embeddings from an encoder: the encoder of a trained ``HFEncoderClassifier``, or a pretrained one.

An embedding is the last layer's hidden states, mean-pooled over the real (unpadded) tokens (``mean``) or
the first token's (``cls``), computed in fp32 under ``torch.inference_mode``. Rows are batched by token
length, so padding stays small; texts longer than ``max_length`` tokens are truncated (counted in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from mlops.core.errors import ModelError
from models.hf_common.batching import length_sorted_batches
from models.hf_common.resolve import resolve_pretrained
from models.hf_common.training import ThreadBudget, quiet_transformers, token_lengths

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
#: Tokens per text for a pretrained encoder (a trained classifier uses its own max_length).
PRETRAINED_MAX_LENGTH = 128


class EncoderEmbedder:
    """``embedder(texts) -> (len(texts), hidden_size)`` float32 array; see the module docstring."""

    def __init__(self, module, tokenizer, *, device: str, max_length: int, batch_size: int = 64,
                 pooling: Pooling = "mean", threads: ThreadBudget | None = None, source: str = "") -> None:
        if batch_size < 1:
            raise ModelError(f"the embedding batch size must be at least 1, found {batch_size}; set --batch-size.")
        if pooling not in ("mean", "cls"):
            raise ModelError(f"pooling must be 'mean' or 'cls', found {pooling!r}.")
        self.module = module
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.pooling = pooling
        self.threads = threads
        self.source = source

    def _pool(self, outputs, mask):
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is None:  # a sequence-classification model: its encoder's last layer is hidden_states[-1]
            hidden = outputs.hidden_states[-1]
        hidden = hidden.float()
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = [str(text) for text in texts]
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        if self.threads is not None:
            self.threads.apply()
        lengths, truncated = token_lengths(self.tokenizer, texts, None, self.max_length)
        if truncated:
            logger.info("%d of %d texts are longer than %d tokens and were truncated for embedding", truncated,
                        len(texts), self.max_length)
        out: np.ndarray | None = None
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                for idx in length_sorted_batches(lengths, self.batch_size):
                    encoded = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                             padding=True, return_tensors="pt", verbose=False)
                    inputs = {key: value.to(self.device) for key, value in encoded.items()}
                    outputs = self.module(**inputs, output_hidden_states=True)
                    pooled = self._pool(outputs, inputs["attention_mask"]).cpu().numpy()
                    if out is None:
                        out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
                    out[idx] = pooled
        finally:
            self.module.train(was_training)
        return out


def classifier_embedder(model, *, batch_size: int = 64, pooling: Pooling = "mean") -> EncoderEmbedder:
    """The encoder inside a trained (or loaded) ``HFEncoderClassifier``, on its device, with its max_length."""
    if model.uses_text_pairs:
        raise ModelError("this model was trained on sentence pairs; pseudo-label embeds single texts. Use a model "
                         "trained on single texts, or a pretrained encoder.")
    return EncoderEmbedder(model.fitted_module(), model.tokenizer, device=model.device, max_length=model.max_length,
                           batch_size=batch_size, pooling=pooling, source="the trained classifier's encoder")


def pretrained_embedder(name: str, *, device: str | None = None, batch_size: int = 64, pooling: Pooling = "mean",
                        max_length: int = PRETRAINED_MAX_LENGTH) -> EncoderEmbedder:
    """A pretrained encoder (a local folder, a packaged hub id, or a hub id; see ``resolve_pretrained``) as
    ``AutoModel`` in fp32 on ``device`` (default: CUDA if present, else CPU). No remote code is run."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models.hf_common.device import pick_device

    resolved = resolve_pretrained(name)
    device = pick_device(device)
    threads = ThreadBudget(None) if device == "cpu" else None
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(resolved.source)
            module = AutoModel.from_pretrained(resolved.source, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load {resolved.source!r} ({resolved.kind}) as an encoder: {exc}. Pass a folder "
                         "written by `cli train-final-model`, or a pretrained encoder (a folder with config.json, "
                         "weights and tokenizer files, or a hub id such as "
                         "sentence-transformers/all-MiniLM-L6-v2).") from exc
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"the tokenizer of {resolved.source!r} has no pad, eos or unk token to pad with.")
        tokenizer.pad_token = fallback
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 8 <= limit < max_length:
        max_length = limit
    return EncoderEmbedder(module.to(device).eval(), tokenizer, device=device, max_length=max_length,
                           batch_size=batch_size, pooling=pooling, threads=threads,
                           source=f"{resolved.source} ({resolved.kind})")
