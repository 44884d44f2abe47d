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
        torch.manual_seed(seed)
        kwargs = dict(
            max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
            pad_token_id=self.tokenizer.pad_token_id,
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
