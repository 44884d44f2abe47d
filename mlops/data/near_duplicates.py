"""Near-duplicate texts: MinHash LSH over character shingles (datasketch), and neighbours among embeddings.

The MinHash signatures are datasketch's ``affine32`` scheme (its permutations, its MurmurHash3 pre-mix),
computed for many texts at once with numpy instead of one ``MinHash.update`` per shingle; the index and its
banding are datasketch's ``MinHashLSH``. Candidate pairs from the index are kept when their estimated
Jaccard similarity (the share of equal signature slots) reaches the threshold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlops.core.errors import DataError

SHINGLE_CHARS = 3
NUM_PERM = 128
MINHASH_SEED = 1
DEFAULT_JACCARD = 0.8
DEFAULT_COSINE = 0.9
_NOT_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
_FMIX = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_ROLL = np.uint32(1_000_003)
_CHUNK_SHINGLES = 100_000  # shingles per numpy block: x NUM_PERM x 4 bytes, about 50 MB, stays fast in cache


@dataclass(frozen=True)
class Pairs:
    """Pairs of row positions (first < second) and their similarity; ``method`` names how they were found."""

    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    method: str

    def __len__(self) -> int:
        return len(self.first)


def shingle_form(text: str) -> str:
    """What shingles are taken from: case-folded, punctuation dropped, whitespace collapsed."""
    from mlops.data.splitting import normalise_text

    return _SPACES.sub(" ", _NOT_WORD.sub(" ", normalise_text(text))).strip()


def _fmix32(values: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX
    values = values ^ (values >> s1)
    values = values * m1
    values = values ^ (values >> s2)
    values = values * m2
    return values ^ (values >> s3)


def shingle_hashes(text: str, k: int = SHINGLE_CHARS) -> np.ndarray:
    """32-bit hashes of the k-character shingles of one (shingle-form) text; a shorter text is one shingle."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if len(codes) == 0:
        return np.empty(0, dtype=np.uint32)
    if len(codes) < k:
        codes = np.concatenate([codes, np.zeros(k - len(codes), dtype=np.uint32)])
    n = len(codes) - k + 1
    hashes = np.zeros(n, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for j in range(k):  # polynomial rolling hash, wrapping at 2^32
            hashes = hashes * _ROLL + codes[j:j + n]
    return hashes


def permutations(num_perm: int = NUM_PERM, seed: int = MINHASH_SEED) -> np.ndarray:
    """datasketch's affine32 permutation parameters (a, b), shape (2, num_perm)."""
    from datasketch import MinHash

    return np.asarray(MinHash(num_perm=num_perm, seed=seed).permutations, dtype=np.uint32)


def _chunk_hashes(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of several texts at once (as :func:`shingle_hashes` gives them), and each one's text."""
    padded = [t + "\0" * (k - len(t)) if 0 < len(t) < k else t for t in texts]
    lengths = np.array([len(t) for t in padded], dtype=np.int64)
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32)
    n = len(codes) - k + 1
    hashes = np.zeros(max(n, 0), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for j in range(k):
            hashes = hashes * _ROLL + codes[j:j + n]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    counts = np.where(lengths > 0, lengths - k + 1, 0)
    owner = np.repeat(np.arange(len(texts)), counts)
    offsets = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return hashes[np.repeat(starts, counts) + offsets], owner


def signatures(texts: Sequence[str], *, num_perm: int = NUM_PERM, seed: int = MINHASH_SEED) -> np.ndarray:
    """MinHash signature per (shingle-form) text, (n, num_perm) uint32; an empty text gets all 2^32-1.

    Equal to datasketch ``MinHash(num_perm, seed, hashfunc=...)`` updated with :func:`shingle_hashes`.
    """
    a, b = permutations(num_perm, seed)
    out = np.full((len(texts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    per_chunk = max(1, _CHUNK_SHINGLES // max(1, int(np.mean([len(t) for t in texts[:1000]] or [1]))))
    for start in range(0, len(texts), per_chunk):
        hashes, owner = _chunk_hashes(texts[start:start + per_chunk], SHINGLE_CHARS)
        if not len(hashes):
            continue
        mixed = _fmix32(hashes)
        with np.errstate(over="ignore"):
            permuted = np.multiply.outer(a, mixed)  # (num_perm, shingles): the min runs along contiguous rows
            permuted += b[:, None]
        present, bounds = np.unique(owner, return_index=True)
        out[start + present] = np.minimum.reduceat(permuted, bounds, axis=1).T
    return out


def minhash_pairs(texts: Sequence[str], *, threshold: float = DEFAULT_JACCARD, num_perm: int = NUM_PERM,
                  progress=None) -> Pairs:
    """Pairs of rows whose shingle sets have an estimated Jaccard similarity of at least ``threshold``.

    Rows with the same shingle form are one text for the index; each such row is paired with the first row of
    its form (similarity 1). Rows with nothing to shingle (only punctuation) are left out.
    """
    import pandas as pd
    from datasketch import LeanMinHash, MinHashLSH

    if not 0.0 < threshold <= 1.0:
        raise DataError(f"the Jaccard threshold must be in (0, 1], found {threshold}.")
    forms = [shingle_form(t) for t in texts]
    codes, uniques = pd.factorize(pd.Series(forms, dtype=object))
    firsts = np.unique(codes, return_index=True)[1].astype(np.int64)  # the first row of each form
    first_list, second_list, sim_list = [], [], []
    repeated = np.flatnonzero(firsts[codes] != np.arange(len(codes)))
    keep = [i for i in repeated if uniques[codes[i]]]
    first_list.append(firsts[codes[keep]])
    second_list.append(np.asarray(keep, dtype=np.int64))
    sim_list.append(np.ones(len(keep)))

    sigs = signatures(list(uniques), num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    non_empty = [u for u in range(len(uniques)) if uniques[u]]
    with lsh.insertion_session() as session:
        for u in non_empty:
            session.insert(u, LeanMinHash(seed=MINHASH_SEED, hashvalues=sigs[u], scheme="affine32"),
                           check_duplication=False)
    if progress:
        progress(len(non_empty) // 2, len(non_empty))
    candidates_a, candidates_b = [], []
    for step, u in enumerate(non_empty):
        for v in lsh.query(LeanMinHash(seed=MINHASH_SEED, hashvalues=sigs[u], scheme="affine32")):
            if v > u:
                candidates_a.append(u)
                candidates_b.append(v)
        if progress and step % 20_000 == 0:
            progress(len(non_empty) // 2 + step // 2, len(non_empty))
    ua, ub = np.asarray(candidates_a, dtype=np.int64), np.asarray(candidates_b, dtype=np.int64)
    estimated = np.zeros(len(ua))
    for lo in range(0, len(ua), 100_000):
        estimated[lo:lo + 100_000] = (sigs[ua[lo:lo + 100_000]] == sigs[ub[lo:lo + 100_000]]).mean(axis=1)
    close = estimated >= threshold
    rows_a, rows_b = firsts[ua[close]], firsts[ub[close]]
    first_list.append(np.minimum(rows_a, rows_b))
    second_list.append(np.maximum(rows_a, rows_b))
    sim_list.append(estimated[close])
    return _sorted_pairs(np.concatenate(first_list), np.concatenate(second_list), np.concatenate(sim_list),
                         "minhash")


def embedding_pairs(vectors: np.ndarray, *, threshold: float = DEFAULT_COSINE, neighbours: int = 10) -> Pairs:
    """Pairs of rows whose embeddings have a cosine similarity of at least ``threshold`` (each row's
    ``neighbours`` nearest, by scikit-learn's exact nearest-neighbour search)."""
    from sklearn.neighbors import NearestNeighbors

    if not -1.0 <= threshold <= 1.0:
        raise DataError(f"the cosine threshold must be in [-1, 1], found {threshold}.")
    n = len(vectors)
    if n < 2:
        return Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), "embedding")
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    index = NearestNeighbors(n_neighbors=min(neighbours + 1, n), metric="euclidean", algorithm="auto").fit(unit)
    distances, found = index.kneighbors(unit)
    similarity = 1.0 - distances**2 / 2.0  # unit vectors: |a-b|^2 = 2 - 2 cos
    rows = np.repeat(np.arange(n), found.shape[1])
    found, similarity = found.ravel(), similarity.ravel()
    keep = (found != rows) & (similarity >= threshold)
    a, b = np.minimum(rows[keep], found[keep]), np.maximum(rows[keep], found[keep])
    return _sorted_pairs(a, b, similarity[keep], "embedding")


def _sorted_pairs(first: np.ndarray, second: np.ndarray, similarity: np.ndarray, method: str) -> Pairs:
    if len(first) == 0:
        return Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), method)
    keys = np.stack([first, second], axis=1)
    keys, index = np.unique(keys, axis=0, return_index=True)
    return Pairs(keys[:, 0].astype(np.int64), keys[:, 1].astype(np.int64), similarity[index].astype(float), method)
