"""Which unlabelled rows to label next: uncertainty scores, a diversity-aware pick and the random control.

Every strategy ranks rows by a score where higher means "more worth labelling":

- ``entropy``: the entropy of the predicted distribution;
- ``margin``: 1 - (p_top - p_second), the smaller the lead of the best class the higher;
- ``least-confidence``: 1 - p_top;
- ``diverse``: the most uncertain rows (entropy) of as many k-means clusters of the candidates' TF-IDF vectors
  as rows asked for, so that a batch is not many copies of one hard case (cluster-based, in the spirit of
  Zhdanov 2019, "Diverse mini-batch active learning");
- ``random``: a seeded uniform draw, the control every strategy must beat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlops.core.errors import ConfigError

STRATEGIES = ("entropy", "margin", "least-confidence", "diverse", "random")
#: ``diverse`` clusters this many times the asked-for rows of the most uncertain candidates.
DIVERSE_POOL_FACTOR = 10


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    return strategy


def uncertainty(proba: np.ndarray, strategy: str) -> np.ndarray:
    """Per row, how unsure the model is by ``strategy`` (``diverse`` and ``random`` use entropy)."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    if strategy == "margin":
        top2 = np.sort(proba, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if strategy == "least-confidence":
        return 1.0 - proba.max(axis=1)
    safe = np.where(proba > 0, proba, 1.0)
    return -(proba * np.log(safe)).sum(axis=1)


def random_keys(n: int, seed: int, offset: int = 0) -> np.ndarray:
    """A uniform key per row, the same for a row whatever the chunk it comes in (seeded by its position)."""
    positions = np.arange(offset, offset + n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping multiplication is the point (a SplitMix64-style mix)
        mixed = (positions + np.full(n, seed, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(31)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def diverse_pick(texts: Sequence[str], scores: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions (into ``texts``) of ``n`` rows: the highest-scoring row of each of ``n`` k-means clusters."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) <= n:
        return np.argsort(-scores, kind="stable")
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                              max_features=50_000).fit_transform(texts)
    clusters = KMeans(n_clusters=n, n_init=3, random_state=seed).fit_predict(vectors)
    picked = []
    for cluster in range(n):
        members = np.flatnonzero(clusters == cluster)
        if len(members):
            picked.append(members[np.argmax(scores[members])])
    picked = np.asarray(picked, dtype=np.int64)
    return picked[np.argsort(-scores[picked], kind="stable")]


def select(proba: np.ndarray, n: int, strategy: str, *, texts: Sequence[str] | None = None,
           seed: int = 0) -> np.ndarray:
    """Positions of the ``n`` rows to label next, in order, among the rows of ``proba``."""
    check_strategy(strategy)
    n = min(n, len(proba))
    if strategy == "random":
        return np.argsort(random_keys(len(proba), seed), kind="stable")[:n]
    scores = uncertainty(proba, strategy)
    if strategy != "diverse":
        return np.argsort(-scores, kind="stable")[:n]
    if texts is None:
        raise ConfigError("the diverse strategy needs the texts of the candidate rows.")
    candidates = np.argsort(-scores, kind="stable")[: n * DIVERSE_POOL_FACTOR]
    return candidates[diverse_pick([texts[i] for i in candidates], scores[candidates], n, seed)]
