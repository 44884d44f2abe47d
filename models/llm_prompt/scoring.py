"""Label scoring for causal LMs: log p(label tokens | prompt) for every label, batched.

The shared prompt prefix (instruction + few-shot examples) is run once and its key/value cache is
reused for every batch; only the hidden states at label positions go through the (large) output
embedding. When every label is a single token, one pass per row reads all labels at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np

from mlops.core.errors import ModelError
from models.llm_prompt.prompting import RenderedPrompt


def label_token_ids(tokenizer, labels: Sequence[str], label_prefix: str) -> list[list[int]]:
    ids = []
    for label in labels:
        tokens = tokenizer(label_prefix + label, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ModelError(f"label {label!r} tokenizes to nothing with this tokenizer; rename the label.")
        ids.append(list(tokens))
    return ids


def _unwrap(model):
    """The causal LM under a peft wrapper (LoRA layers stay injected), its decoder and output head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base, base.get_decoder(), base.get_output_embeddings()


def _log_softmax_at(base, head, hidden):
    import torch

    logits = head(hidden).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


class _CachedPrefix:
    """The prompt's shared prefix run once; ``run`` continues it for a batch of token sequences."""

    def __init__(self, decoder, prefix_ids: list[int], pad_id: int, device) -> None:
        import torch

        self.decoder, self.pad_id, self.device = decoder, pad_id, device
        self.cache = None
        with torch.inference_mode():
            if prefix_ids:
                out = decoder(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True)
                self.cache = out.past_key_values
        self.n_cached = len(prefix_ids)

    def run(self, sequences: list[list[int]]):
        """Last hidden states of ``sequences`` (right-padded) after the cached prefix."""
        import torch

        n_cached = self.n_cached
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), n_cached + width), dtype=torch.long)
        mask[:, :n_cached] = 1
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, n_cached : n_cached + len(s)] = 1
        past = None
        if self.cache is not None:
            past = copy.deepcopy(self.cache)
            past.batch_repeat_interleave(len(sequences))
        out = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), past_key_values=past,
                           use_cache=self.cache is not None)
        return out.last_hidden_state


def _row_ids(tokenizer, prompt: RenderedPrompt, texts: Sequence[str], carry: list[int],
             max_text_tokens: int | None) -> list[list[int]]:
    rows = []
    for text in texts:
        text_ids = tokenizer(prompt.suffix(text), add_special_tokens=False)["input_ids"]
        if max_text_tokens is not None and len(text_ids) > max_text_tokens:
            # keep the answer cue at the end: cut the text in the middle of the suffix
            tail = tokenizer(prompt.suffix(""), add_special_tokens=False)["input_ids"]
            text_ids = text_ids[: max(max_text_tokens - len(tail), 1)] + tail
        rows.append(carry + list(text_ids))
    return rows


def _score_single_token(prefix: _CachedPrefix, base, head, rows, label_ids, result, batch_size, progress) -> None:
    """Every label is one token: one pass per row reads all of them at the last position."""
    import torch

    device = prefix.device
    wanted = torch.tensor([t[0] for t in label_ids], device=device)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        hidden = prefix.run(chunk)
        last = torch.tensor([len(s) - 1 for s in chunk], device=device)
        picked = hidden[torch.arange(len(chunk), device=device), last]
        logp = _log_softmax_at(base, head, picked)[:, wanted]
        result[start : start + len(chunk)] = logp.double().cpu().numpy()
        if progress:
            progress(len(chunk))


def _score_multi_token(prefix: _CachedPrefix, base, head, rows, label_ids, result, batch_size, progress) -> None:
    """Some label has several tokens: one pass per (row, label), summing the label tokens' log-probs."""
    import torch

    device = prefix.device
    n_labels = len(label_ids)
    pairs = [(i, j) for i in range(len(rows)) for j in range(n_labels)]
    per_batch = max(batch_size, 1)
    done_rows = 0
    for start in range(0, len(pairs), per_batch):
        chunk = pairs[start : start + per_batch]
        hidden = prefix.run([rows[i] + label_ids[j] for i, j in chunk])
        batch_idx, pos_idx, tok_ids = [], [], []
        for b, (i, j) in enumerate(chunk):
            first = len(rows[i]) - 1
            for t, tok in enumerate(label_ids[j]):
                batch_idx.append(b)
                pos_idx.append(first + t)
                tok_ids.append(tok)
        picked = hidden[torch.tensor(batch_idx, device=device), torch.tensor(pos_idx, device=device)]
        logp = _log_softmax_at(base, head, picked)
        token_logp = logp[torch.arange(len(tok_ids), device=device), torch.tensor(tok_ids, device=device)]
        sums = torch.zeros(len(chunk), dtype=torch.float64, device=device)
        sums.index_add_(0, torch.tensor(batch_idx, device=device), token_logp.double())
        for b, (i, j) in enumerate(chunk):
            result[i, j] = float(sums[b])
        if progress:
            finished = (start + len(chunk)) // n_labels
            progress(finished - done_rows)
            done_rows = finished


def score_labels(
    model,
    tokenizer,
    prompt: RenderedPrompt,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    batch_size: int = 16,
    max_text_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(logprob_sums, n_tokens)``: the (n, k) summed label log-probabilities and each label's token count."""
    import torch

    base, decoder, head = _unwrap(model)
    device = next(base.parameters()).device
    label_ids = label_token_ids(tokenizer, labels, prompt.label_prefix)
    n_tokens = np.asarray([len(t) for t in label_ids], dtype=np.float64)
    prefix_ids = tokenizer(prompt.prefix, add_special_tokens=not prompt.prefix_has_special_tokens)["input_ids"]
    # The last prefix token goes with every row, so each row has at least one token to predict from.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = _CachedPrefix(decoder, list(prefix_ids[:-1]), pad_id, device)
    rows = _row_ids(tokenizer, prompt, texts, list(prefix_ids[-1:]), max_text_tokens)
    if not rows and not texts:
        return np.zeros((0, len(labels))), n_tokens
    if any(not r for r in rows):
        raise ModelError("the prompt template produced an empty prompt; put some text before the label.")
    result = np.zeros((len(rows), len(labels)), dtype=np.float64)
    score = _score_single_token if all(len(t) == 1 for t in label_ids) else _score_multi_token
    with torch.inference_mode():
        score(prefix, base, head, rows, label_ids, result, batch_size, progress)
    return result, n_tokens
