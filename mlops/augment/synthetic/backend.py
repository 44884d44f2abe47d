"""Sampling from a causal LM with transformers (imported lazily)."""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class TextGenerator(Protocol):
    name: str
    source: str
    uses_chat_template: bool

    def complete(self, prompts: list[str | list[dict[str, str]]], *, seed: int, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        """One completion per prompt (a string, or chat messages when ``uses_chat_template``)."""


class HfGenerator:
    """A transformers causal LM; completions stop at the first newline."""

    def __init__(self, name: str | None, device: str | None = None) -> None:
        from models.hf_common.device import pick_device
        from models.llm_prompt.loading import OFFLINE_DEFAULT, has_chat_template, load_causal_lm

        self.device = pick_device(device)
        self.name = name or OFFLINE_DEFAULT
        self.model, self.tokenizer, self.source = load_causal_lm(name, device=self.device)
        self.tokenizer.padding_side = "left"
        self.uses_chat_template = has_chat_template(self.tokenizer)

    def complete(self, prompts, *, seed: int, max_new_tokens: int, temperature: float, top_p: float) -> list[str]:
        import torch

        if self.uses_chat_template:
            texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
            add_special = False
        else:
            texts, add_special = list(prompts), True
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        # Sampling is done by our processor (top-k pre-selection, then temperature and nucleus), and
        # generate() only takes the argmax of its one-hot output: on CPU, transformers' own top-p sort
        # and multinomial over Gemma's 262k vocabulary cost several times the model's forward pass.
        kwargs = dict(
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=[_sampler(temperature, top_p, generator)],
            temperature=None, top_p=None, top_k=None,
        )
        if not self.uses_chat_template:
            kwargs["stopping_criteria"] = [_NewlineStop(self.tokenizer, enc["input_ids"].shape[1])]
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


def _NewlineStop(tokenizer, prompt_len: int):
    """Stop each row once its completion contains a newline (works with any tokenizer, unlike
    ``stop_strings``, which needs a vocabulary it can map to strings)."""
    import torch
    from transformers import StoppingCriteria

    class NewlineStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor(["\n" in t for t in texts], dtype=torch.bool, device=input_ids.device)

    return NewlineStop()


SAMPLER_TOP_K = 1024


def _sampler(temperature: float, top_p: float, generator):
    """A logits processor that samples one token per row (temperature, then nucleus ``top_p`` within the
    ``SAMPLER_TOP_K`` most likely tokens) and returns scores whose argmax is that token."""
    import torch
    from transformers import LogitsProcessor

    class TopKNucleusSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            k = min(SAMPLER_TOP_K, scores.shape[-1])
            values, indices = torch.topk(scores.float(), k, dim=-1)
            probs = torch.softmax(values / temperature, dim=-1)
            before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
            probs = probs.masked_fill(before >= top_p, 0.0)
            choice = torch.multinomial(probs, 1, generator=generator)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(-1, indices.gather(-1, choice), 0.0)

    return TopKNucleusSampler()
