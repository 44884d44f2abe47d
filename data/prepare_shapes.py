"""Data sets of other shapes than the MR sentences, built from the same VADER source tarball, for measuring
whether a model config's defaults hold across data (docs/benchmarks.md, "Defaults across data shapes").

- ``tweets_3class.csv``: 1,500 short social-media posts in three imbalanced classes (60% positive, 25%
  neutral, 15% negative), cut from the tweets' mean human ratings (-4..4): positive >= 0.5, negative <= -0.5,
  neutral within +-0.25 (the ratings in between are left out as ambiguous).
- ``sources_4class.csv``: 2,000 snippets, 500 from each of four sources (tweet, product review, newspaper
  editorial, movie review): a balanced multi-class task.
- ``long_reviews.csv``: 1,600 long texts (about 100 words), each five MR sentences of one polarity joined.

    uv run python -m data.prepare_shapes
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from data.prepare_mr import HERE, download_sdist, read_ground_truth, read_mr_rows, write_csv

SEED = 17
TWEET_CLASSES = {"positive": 900, "neutral": 375, "negative": 225}
SOURCES = {"tweet": "tweets", "product_review": "amazonReviewSnippets", "editorial": "nytEditorialSnippets",
           "movie_review": "movieReviewSnippets"}
PER_SOURCE = 500
LONG_DOCS, SENTENCES_PER_DOC = 1600, 5


def tweet_label(rating: float) -> str | None:
    if rating >= 0.5:
        return "positive"
    if rating <= -0.5:
        return "negative"
    return "neutral" if abs(rating) <= 0.25 else None


def tweets_3class(sdist: Path, rng: np.random.Generator) -> list[tuple[str, str]]:
    by_label: dict[str, list[str]] = {label: [] for label in TWEET_CLASSES}
    for _id, rating, text in read_ground_truth(sdist, "tweets"):
        if (label := tweet_label(rating)) is not None:
            by_label[label].append(text)
    rows = [(by_label[label][i], label) for label, n in TWEET_CLASSES.items()
            for i in rng.choice(len(by_label[label]), size=n, replace=False)]
    return [rows[i] for i in rng.permutation(len(rows))]


def sources_4class(sdist: Path, rng: np.random.Generator) -> list[tuple[str, str]]:
    rows = []
    for label, name in SOURCES.items():
        texts = [text for _id, _rating, text in read_ground_truth(sdist, name)]
        rows += [(texts[i], label) for i in rng.choice(len(texts), size=PER_SOURCE, replace=False)]
    return [rows[i] for i in rng.permutation(len(rows))]


def long_reviews(sdist: Path, rng: np.random.Generator) -> list[tuple[str, str]]:
    rows = []
    mr = read_mr_rows(sdist)
    for label in ("positive", "negative"):
        texts = [text for text, which in mr if which == label]
        order = rng.permutation(len(texts))[: LONG_DOCS // 2 * SENTENCES_PER_DOC]
        rows += [(" ".join(texts[i] for i in chunk), label) for chunk in order.reshape(-1, SENTENCES_PER_DOC)]
    return [rows[i] for i in rng.permutation(len(rows))]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist(Path(tmp))
        for name, build in (("tweets_3class", tweets_3class), ("sources_4class", sources_4class),
                            ("long_reviews", long_reviews)):
            rows = build(sdist, np.random.default_rng(SEED))
            write_csv(HERE / "shapes" / f"{name}.csv", rows)
            print(f"{name}.csv: {len(rows)} rows")


if __name__ == "__main__":
    main()
