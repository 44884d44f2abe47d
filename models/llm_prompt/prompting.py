"""Prompt templates for LLM classifiers: one fixed prefix (instruction + few-shot examples) per model,
then each row's text and the answer cue; the label is the continuation being scored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mlops.core.text_dataset import TextDataset

TEXT = "{text}"
LABEL = "{label}"
LABELS = "{labels}"
_SENTINEL = "\u241e\u241eTEXT\u241e\u241e"


class PromptTemplate(BaseModel):
    """How a row becomes a prompt. ``{labels}`` (comma-separated label set), ``{text}`` and ``{label}``
    are replaced literally (no str.format, so braces in texts are safe)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = "Classify the sentiment of each movie review as one of: {labels}."
    example_template: str = "Review: {text}\nSentiment: {label}"
    query_template: str = "Review: {text}\nSentiment:"
    separator: str = "\n\n"
    #: put before the label in the scored continuation (" positive" after "Sentiment:"); with a chat
    #: template the assistant turn starts directly with the label, so it is not used there.
    label_prefix: str = " "
    use_chat_template: Literal["auto", "always", "never"] = "auto"

    @model_validator(mode="after")
    def _placeholders(self) -> PromptTemplate:
        if self.query_template.count(TEXT) != 1:
            raise ValueError(f"query_template must contain {TEXT} exactly once, found {self.query_template!r}")
        if TEXT not in self.example_template or LABEL not in self.example_template:
            raise ValueError(
                f"example_template must contain {TEXT} and {LABEL}, found {self.example_template!r}"
            )
        return self


@dataclass(frozen=True)
class RenderedPrompt:
    """``prefix`` is shared by every row; a row's prompt is ``prefix + suffix_template.replace(TEXT, text)``."""

    prefix: str
    suffix_template: str
    label_prefix: str
    prefix_has_special_tokens: bool  # True when the chat template already wrote BOS etc.

    def suffix(self, text: str) -> str:
        return self.suffix_template.replace(TEXT, text)


def render(
    template: PromptTemplate,
    labels: Sequence[str],
    examples: Sequence[tuple[str, str]],
    tokenizer=None,
) -> RenderedPrompt:
    """Build the shared prefix and per-row suffix; uses the tokenizer's chat template when asked/available."""
    labels_text = ", ".join(labels)
    parts = [template.instruction.replace(LABELS, labels_text)] if template.instruction else []
    parts += [
        template.example_template.replace(LABELS, labels_text).replace(TEXT, text).replace(LABEL, label)
        for text, label in examples
    ]
    parts.append(template.query_template.replace(LABELS, labels_text).replace(TEXT, _SENTINEL))
    body = template.separator.join(parts)
    chat = template.use_chat_template == "always" or (
        template.use_chat_template == "auto" and tokenizer is not None and getattr(tokenizer, "chat_template", None)
    )
    if chat:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("use_chat_template is 'always' but the tokenizer has no chat template")
        body = tokenizer.apply_chat_template(
            [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
        )
        label_prefix = ""
    else:
        label_prefix = template.label_prefix
    prefix, suffix = body.split(_SENTINEL)
    # Keep the space before the text with the text, so "Review: great" tokenizes as in running text.
    stripped = prefix.rstrip(" ")
    suffix = " " * (len(prefix) - len(stripped)) + TEXT + suffix
    return RenderedPrompt(stripped, suffix, label_prefix, bool(chat))


def join_pair(text: str, pair: str | None) -> str:
    return text if pair is None else f"{text}\n{pair}"


def prompt_inputs(data: TextDataset) -> list[str]:
    """The text each row puts in a prompt: the text, and its pair on the next line for pair data."""
    pairs = data.text_pairs if data.text_pairs is not None else [None] * len(data)
    return [join_pair(str(t), None if p is None else str(p)) for t, p in zip(data.texts, pairs, strict=True)]
