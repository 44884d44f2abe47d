"""TextDataset: the rows a model is fitted on or scores (texts, optional text pairs, optional labels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TextDataset:
    """Texts (and optional second texts of a pair) with their string labels, if known."""

    texts: Sequence[str]
    labels: Sequence[str] | None = None
    text_pairs: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        for name, column in (("labels", self.labels), ("text_pairs", self.text_pairs)):
            if column is not None and len(column) != n:
                raise ValueError(f"TextDataset: {name} has {len(column)} rows but texts has {n}")

    def __len__(self) -> int:
        return len(self.texts)
