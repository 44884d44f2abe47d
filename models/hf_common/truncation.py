"""Which tokens of a long text the encoder reads: the head only (the usual cut), or its head and its tail.

Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification") found that keeping the first 128 and the last
382 of 512 tokens beat the head alone on long reviews: a review's verdict is often at its end. The cut is made on
a tokenized text with its special tokens, keeping the first token (CLS or <s>) and ``head_tokens`` after it, then
the last tokens up to ``max_length`` (the closing SEP or </s> included), so the HF and the ONNX runtimes make
exactly the same cut.
"""

from __future__ import annotations

from collections.abc import Sequence


def head_tail_cut(sequence: Sequence, max_length: int, head_tokens: int) -> list:
    """``sequence`` (ids, masks or type ids of one tokenized text) cut to ``max_length`` keeping head and tail."""
    sequence = list(sequence)
    if len(sequence) <= max_length:
        return sequence
    tail = max_length - 1 - head_tokens
    return sequence[: 1 + head_tokens] + sequence[len(sequence) - tail:]


def head_tokens_for(strategy: str, head_tokens: int | None, max_length: int) -> int | None:
    """Content tokens kept from the start under ``head_tail`` (default a quarter of max_length); None: head only."""
    if strategy != "head_tail":
        return None
    head = max_length // 4 if head_tokens is None else head_tokens
    return max(0, min(head, max_length - 3))


def tokenize(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, head_tokens: int | None):
    """A padded batch of tensors: cut from the end (pairs, or ``head_tokens`` None), else head and tail."""
    if head_tokens is None or pairs is not None:
        return tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                         verbose=False)
    whole = tokenizer(texts, truncation=False, padding=False, verbose=False)
    cut = {key: [head_tail_cut(v, max_length, head_tokens) for v in values] for key, values in whole.items()}
    return tokenizer.pad(cut, return_tensors="pt")
