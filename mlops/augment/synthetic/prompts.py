"""Generation prompts: plain few-shot completion for base models, a chat turn for chat models."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mlops.augment.synthetic.quality import LANGUAGE_NAMES

SENTIMENT_LABELS = {"negative", "neutral", "positive", "very negative", "very positive", "mixed"}


@dataclass(frozen=True)
class PromptStyle:
    field: str  # "Sentiment" or "Label"
    item: str  # "Review" or "Text"
    language: str
    domain: str

    @classmethod
    def for_request(cls, labels: list[str], lang: str, domain: str) -> PromptStyle:
        field = "Sentiment" if set(labels) <= SENTIMENT_LABELS else "Label"
        item = "Review" if "review" in domain.lower() else "Text"
        return cls(field, item, LANGUAGE_NAMES.get(lang, lang), domain)

    @property
    def strip_prefixes(self) -> tuple[str, ...]:
        return (f"{self.item}:", "Text:", "Review:")


def pick_shots(pool: list[tuple[str, str]], label: str, shots: int, rng: random.Random) -> list[tuple[str, str]]:
    """``shots`` examples: at least one (up to half) of ``label``, the rest of any label, shuffled."""
    own = [e for e in pool if e[1] == label]
    rest = [e for e in pool if e[1] != label]
    n_own = min(len(own), max(1, shots // 2))
    chosen = rng.sample(own, n_own) + rng.sample(rest, min(len(rest), shots - n_own))
    rng.shuffle(chosen)
    return chosen


def plain_prompt(style: PromptStyle, shots: list[tuple[str, str]], label: str) -> str:
    head = f"The following are {style.domain} written in {style.language}, each with its {style.field.lower()}."
    blocks = [f"{style.field}: {y}\n{style.item}: {t}" for t, y in shots]
    return "\n\n".join([head, *blocks, f"{style.field}: {label}\n{style.item}:"])


def chat_messages(style: PromptStyle, shots: list[tuple[str, str]], label: str) -> list[dict[str, str]]:
    examples = "\n\n".join(f"{style.field}: {y}\n{style.item}: {t}" for t, y in shots)
    content = (
        f"Here are examples of {style.domain} in {style.language}:\n\n{examples}\n\n"
        f"Write one new, original example in {style.language} whose {style.field.lower()} is \"{label}\". "
        f"Do not copy the examples. Answer with the text only, on a single line."
    )
    return [{"role": "user", "content": content}]
