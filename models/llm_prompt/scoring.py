"""Label scoring for causal LMs: log p(label tokens | prompt) for every label, batched.

The shared prompt prefix (instruction + few-shot examples) is run once and its key/value cache is
reused for every batch; only the hidden states at label positions go through the (large) output
embedding. When every label is a single token, one pass per row reads all labels at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np

from mlops.errors import ModelError
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
    carry = list(prefix_ids[-1:])
    cached_ids = list(prefix_ids[:-1])
    cache = None
    with torch.inference_mode():
        if cached_ids:
            out = decoder(input_ids=torch.tensor([cached_ids], device=device), use_cache=True)
            cache = out.past_key_values
    n_cached = len(cached_ids)

    rows = []
    for text in texts:
        text_ids = tokenizer(prompt.suffix(text), add_special_tokens=False)["input_ids"]
        if max_text_tokens is not None and len(text_ids) > max_text_tokens:
            # keep the answer cue at the end: cut the text in the middle of the suffix
            tail = tokenizer(prompt.suffix(""), add_special_tokens=False)["input_ids"]
            text_ids = text_ids[: max(max_text_tokens - len(tail), 1)] + tail
        rows.append(carry + list(text_ids))
    if not rows and not texts:
        return np.zeros((0, len(labels))), n_tokens
    if any(not r for r in rows):
        raise ModelError("the prompt template produced an empty prompt; put some text before the label.")

    single = all(len(t) == 1 for t in label_ids)
    result = np.zeros((len(rows), len(labels)), dtype=np.float64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run(sequences: list[list[int]]):
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), n_cached + width), dtype=torch.long)
        mask[:, :n_cached] = 1
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, n_cached : n_cached + len(s)] = 1
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(sequences))
        out = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=past, use_cache=cache is not None)
        return out.last_hidden_state

    with torch.inference_mode():
        if single:
            wanted = torch.tensor([t[0] for t in label_ids], device=device)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                hidden = run(chunk)
                last = torch.tensor([len(s) - 1 for s in chunk], device=device)
                picked = hidden[torch.arange(len(chunk), device=device), last]
                logp = _log_softmax_at(base, head, picked)[:, wanted]
                result[start : start + len(chunk)] = logp.double().cpu().numpy()
                if progress:
                    progress(len(chunk))
        else:
            pairs = [(i, j) for i in range(len(rows)) for j in range(len(labels))]
            per_batch = max(batch_size, 1)
            done_rows = 0
            for start in range(0, len(pairs), per_batch):
                chunk = pairs[start : start + per_batch]
                sequences = [rows[i] + label_ids[j] for i, j in chunk]
                hidden = run(sequences)
                batch_idx, pos_idx, tok_ids, owner = [], [], [], []
                for b, (i, j) in enumerate(chunk):
                    first = len(rows[i]) - 1
                    for t, tok in enumerate(label_ids[j]):
                        batch_idx.append(b)
                        pos_idx.append(first + t)
                        tok_ids.append(tok)
                        owner.append(b)
                picked = hidden[torch.tensor(batch_idx, device=device), torch.tensor(pos_idx, device=device)]
                logp = _log_softmax_at(base, head, picked)
                token_logp = logp[torch.arange(len(tok_ids), device=device), torch.tensor(tok_ids, device=device)]
                sums = torch.zeros(len(chunk), dtype=torch.float64, device=device)
                sums.index_add_(0, torch.tensor(owner, device=device), token_logp.double())
                for b, (i, j) in enumerate(chunk):
                    result[i, j] = float(sums[b])
                if progress:
                    finished = (start + len(chunk)) // len(labels)
                    progress(finished - done_rows)
                    done_rows = finished
    return result, n_tokens


def probabilities(
    logprob_sums: np.ndarray, n_tokens: np.ndarray, *, length_normalize: bool, bias: np.ndarray | None = None
) -> np.ndarray:
    """Softmax over label scores (mean log-prob per token when ``length_normalize``), minus ``bias``."""
    scores = logprob_sums / n_tokens[None, :] if length_normalize else logprob_sums.copy()
    if bias is not None:
        scores = scores - bias[None, :]
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)
