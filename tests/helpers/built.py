"""Labelled rows a test builds: sentences from per-label vocabularies, so a model separates them well, with a
known set of labels flipped."""

from __future__ import annotations

import numpy as np

WORDS = {
    "negative": "awful dull boring tedious clumsy bland weak messy stale lifeless hollow tiresome".split(),
    "neutral": "cinema screen reel frame scene studio script runtime cast crew sequel premiere".split(),
    "positive": "superb moving witty charming vivid gripping tender clever radiant lovely brilliant fresh".split(),
}
FILLER = "the a film story it was with and of this in its".split()


def built_rows(n: int = 300, *, labels=("negative", "positive"), flip: int = 15, seed: int = 0):
    """Sentences from per-label vocabularies (separable), ``flip`` of them given another label."""
    rng = np.random.default_rng(seed)
    texts, given, truth = [], [], []
    for i in range(n):
        label = labels[i % len(labels)]
        words = list(rng.choice(WORDS[label], 4)) + list(rng.choice(FILLER, 4))
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {i}")
        truth.append(label)
    given = list(truth)
    flipped = rng.choice(n, flip, replace=False)
    for i in flipped:
        given[i] = next(label for label in labels if label != truth[i])
    return texts, given, set(int(i) for i in flipped)


def write_built_csv(path, n: int, *, labels=("negative", "neutral", "positive"), flip: int = 0):
    """``built_rows`` written as a text,label CSV at ``path``; returns the path."""
    import pandas as pd

    texts, given, _ = built_rows(n, labels=labels, flip=flip)
    pd.DataFrame({"text": texts, "label": given}).to_csv(path, index=False)
    return path
