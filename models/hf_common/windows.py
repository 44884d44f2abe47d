"""Long texts read whole: overlapping windows of tokens, each classified, their scores pooled per text.

A text longer than ``max_length`` tokens is split into windows of ``max_length - 2`` content tokens (room for
the special tokens) that overlap by ``overlap`` tokens, at most ``max_windows`` of them (the first ones and
always the last, so the head and the tail are read). A window is the text between its first and last token's
character offsets, so the HF and the ONNX runtimes, which share the tokenizer, cut the same windows. Training
gives every window its text's label; prediction averages the windows' logits (for probabilities: the mean of
log-probabilities, renormalised, which is the softmax of the mean logits; for label sets: the sigmoid of the
mean logits), so the pooled figures are the same whichever runtime computed the windows' probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Offsets of a batch of texts' content tokens (no special tokens): one list of (start, end) per text.
OffsetsOf = Callable[[list[str]], list[list[tuple[int, int]]]]
SPECIAL_TOKENS = 2  # CLS ... SEP or <s> ... </s>


def window_starts(n_tokens: int, window: int, overlap: int, max_windows: int) -> tuple[list[int], bool]:
    """First token of each window over ``n_tokens`` content tokens (the last window ends at the last token), and
    whether windows in the middle were left out to keep ``max_windows``."""
    if n_tokens <= window:
        return [0], False
    step = max(1, window - overlap)
    starts = list(range(0, n_tokens - window, step)) + [n_tokens - window]
    if len(starts) <= max_windows:
        return starts, False
    return starts[: max_windows - 1] + [starts[-1]], True  # the head windows and the tail one


class Windows:
    """Splits texts into windows (``split``) and pools the windows' scores back per text (``pool``)."""

    def __init__(self, offsets_of: OffsetsOf, max_length: int, overlap: int | None, max_windows: int) -> None:
        self.offsets_of = offsets_of
        self.window = max(1, max_length - SPECIAL_TOKENS)
        self.overlap = min(self.window - 1, self.window // 4 if overlap is None else overlap)
        self.max_windows = max_windows

    def split(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray, int]:
        """Every window's text, the index of the text it came from, and how many texts had more windows than
        ``max_windows`` (their middle was not read)."""
        texts = [str(t) for t in texts]
        windows, owner, cut = [], [], 0
        for i, (text, offsets) in enumerate(zip(texts, self.offsets_of(texts), strict=True)):
            n = len(offsets)
            starts, capped = window_starts(n, self.window, self.overlap, self.max_windows)
            cut += capped
            if len(starts) == 1:
                windows.append(text)
            else:
                windows += [text[offsets[s][0]: offsets[min(s + self.window, n) - 1][1]] for s in starts]
            owner += [i] * len(starts)
        return windows, np.asarray(owner, dtype=np.int64), int(cut)

    def training_rows(self, texts: Sequence[str], y: np.ndarray) -> tuple[list[str], np.ndarray, dict[str, int]]:
        """Every window of the training texts with its text's target, and counts for the run's record."""
        windows, owner, cut = self.split(texts)
        logger.info("truncation windows: %d training texts give %d windows", len(texts), len(windows))
        return windows, np.asarray(y)[owner], {"train_texts": len(texts), "train_windows": len(windows),
                                                "texts_cut": cut}

    @staticmethod
    def pool(scores: np.ndarray, owner: np.ndarray, n_texts: int, *, kind: str) -> np.ndarray:
        """Per text, from its windows' ``scores``: ``kind`` logits (their mean), ``softmax`` probabilities or
        ``sigmoid`` probabilities (pooled as their logits' mean, back in the same form)."""
        scores = np.asarray(scores, dtype=np.float64)
        if kind == "softmax":
            scores = np.log(np.clip(scores, 1e-12, None))
        elif kind == "sigmoid":
            clipped = np.clip(scores, 1e-12, 1 - 1e-12)
            scores = np.log(clipped) - np.log1p(-clipped)
        counts = np.bincount(owner, minlength=n_texts).astype(np.float64)
        pooled = np.zeros((n_texts, scores.shape[1]))
        np.add.at(pooled, owner, scores)
        pooled /= counts[:, None]
        if kind == "softmax":
            pooled = np.exp(pooled - pooled.max(axis=1, keepdims=True))
            return pooled / pooled.sum(axis=1, keepdims=True)
        if kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-pooled))
        return pooled


def hf_offsets(tokenizer) -> OffsetsOf:
    """Content-token offsets from a Hugging Face fast tokenizer."""
    def offsets_of(texts: list[str]) -> list[list[tuple[int, int]]]:
        encoded = tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                            verbose=False)
        return [list(map(tuple, row)) for row in encoded["offset_mapping"]]
    return offsets_of


def rust_offsets(tokenizer) -> OffsetsOf:
    """Content-token offsets from a ``tokenizers.Tokenizer`` (the ONNX runtime's), truncation off."""
    def offsets_of(texts: list[str]) -> list[list[tuple[int, int]]]:
        return [list(e.offsets) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return offsets_of
