"""Rows worth a look for what they are rather than for their label: nothing left to read, mostly symbols, longer
than the model reads, or far from every other labelled text."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

MIN_LETTER_SHARE = 0.5
#: A text is far from its neighbours when its mean distance to them exceeds median + this many robust SDs.
OUTLIER_MADS = 3.5
#: Class rows per fold test set below which that class's per-fold scores are noise.
MIN_CLASS_TEST_ROWS = 10
_MAX_REFERENCE_ROWS = 20_000


def letter_share(text: str) -> float:
    """Share of letters among the text's non-space characters (1.0 for an empty text: nothing to judge)."""
    visible = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in visible) / len(visible) if visible else 1.0


def text_flags(texts: Sequence[str]) -> list[tuple[int, str, float]]:
    """(position, reason, value) for texts with nothing to shingle once punctuation goes, or mostly non-letters."""
    from mlops.data.near_duplicates import shingle_form

    found = []
    for i, text in enumerate(texts):
        if not shingle_form(text):
            found.append((i, "nothing_left_after_normalisation", 0.0))
            continue
        share = letter_share(text)
        if share < MIN_LETTER_SHARE:
            found.append((i, "mostly_non_letters", share))
    return found


def token_lengths(model_name: str, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text (special tokens included) with the tokenizer of ``model_name``."""
    from transformers import AutoTokenizer

    from models.hf_common.resolve import resolve_pretrained

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(model_name).source)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), 2048):
        encoded = tokenizer(list(texts[start:start + 2048]), add_special_tokens=True, truncation=False,
                            verbose=False)["input_ids"]
        lengths[start:start + 2048] = [len(ids) for ids in encoded]
    return lengths


def tfidf_vectors(texts: Sequence[str]):
    """Character 2-5-gram TF-IDF vectors (L2-normalised rows), the cheap stand-in for sentence embeddings."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                           max_features=200_000).fit_transform(texts)


def distant_rows(vectors, reference: np.ndarray, *, neighbours: int = 5, seed: int = 0) -> tuple[np.ndarray, float]:
    """Mean cosine distance of every row to its nearest reference rows (a reference row's own entry excluded),
    and the cut-off above which a row is far: median + OUTLIER_MADS robust SDs of the reference rows' distances.

    At most 20,000 reference rows (a seeded sample) keep the search quadratic in that, not in the data.
    """
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    if len(reference) > _MAX_REFERENCE_ROWS:
        reference = np.sort(rng.choice(reference, _MAX_REFERENCE_ROWS, replace=False))
    k = min(neighbours + 1, len(reference))
    index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(vectors[reference])
    distances = np.zeros(vectors.shape[0])
    is_reference = np.zeros(vectors.shape[0], dtype=bool)
    is_reference[reference] = True
    for start in range(0, vectors.shape[0], 4096):
        found_d, found_i = index.kneighbors(vectors[start:start + 4096])
        rows = np.arange(start, min(start + 4096, vectors.shape[0]))
        own = reference[found_i] == rows[:, None]
        # a reference row drops itself; any other row drops its farthest of the k+1 found
        keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k)[None, :] < k - 1)
        distances[rows] = np.where(keep, found_d, 0.0).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)
    ref_d = distances[is_reference]
    median = float(np.median(ref_d))
    mad = float(np.median(np.abs(ref_d - median))) * 1.4826
    return distances, median + OUTLIER_MADS * max(mad, 1e-9)


def small_classes(fold_test_labels: list[np.ndarray], labels: Sequence[str]) -> list[dict]:
    """Classes with fewer than MIN_CLASS_TEST_ROWS rows in some fold's test set."""
    found = []
    for j, label in enumerate(labels):
        counts = [int(np.sum(test == j)) for test in fold_test_labels]
        if counts and min(counts) < MIN_CLASS_TEST_ROWS:
            found.append({"label": label, "fold_test_rows": counts})
    return found
