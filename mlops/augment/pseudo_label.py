"""Clustering pseudo-labels: embed labelled and unlabelled texts together, cluster them, and give the unlabelled
rows of each pure cluster that cluster's majority label.

The steps: ``embed`` every text (one call), L2-normalise, reduce with PCA (``pca_components``, capped by the rows
and dimensions; 0 skips it), cluster with a seeded ``MiniBatchKMeans``. A cluster's label is the majority label
of its labelled members and its purity the share of that label among them; a cluster with fewer than
``min_labelled`` labelled members gets no label. Unlabelled rows of clusters with purity >= ``min_purity`` are
returned with that label.

``pseudo_label(embed, train, pool_texts)`` is pure: it sees only the labelled rows and the pool it is given.
``pseudo_label_fold(embed, data, fold, pool_texts)`` is the lifecycle's entry point: only the fold's training rows
are labelled rows, its validation and test rows are never embedded, and pool texts equal to one of them are
dropped, so nothing of a fold's held-out rows reaches the pseudo-labelled rows.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.core.errors import DataError, ModelError
from mlops.core.text_dataset import TextDataset
from mlops.data.splitting import Fold, normalise_text

logger = logging.getLogger(__name__)

#: Texts in, one embedding row per text out.
Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class PseudoLabelSettings:
    """The knobs of ``pseudo_label``; ``n_clusters=None`` picks ``default_clusters``."""

    n_clusters: int | None = None
    pca_components: int = 50
    min_purity: float = 0.9
    min_labelled: int = 3
    seed: int = 42

    def validate(self) -> None:
        if not 0.0 < self.min_purity <= 1.0:
            raise DataError(f"--min-purity must be in (0, 1], found {self.min_purity}; 0.9 keeps clusters whose "
                            "labelled members agree at least 9 times in 10.")
        if self.n_clusters is not None and self.n_clusters < 2:
            raise DataError(f"--n-clusters must be at least 2, found {self.n_clusters}.")
        if self.pca_components < 0:
            raise DataError(f"--pca-components must be 0 (no PCA) or more, found {self.pca_components}.")
        if self.min_labelled < 1:
            raise DataError(f"--min-labelled must be at least 1, found {self.min_labelled}.")

    def clusters_for(self, n_rows: int, n_labels: int) -> int:
        """``n_clusters``, or sqrt(rows / 2) (at least one per label, at least 2, at most the rows)."""
        if self.n_clusters is not None:
            return self.n_clusters
        return min(n_rows, max(2, n_labels, round(math.sqrt(n_rows / 2))))


@dataclass(frozen=True)
class ClusterStats:
    """One cluster: its size, labelled members, majority label and purity (None without enough labels)."""

    cluster: int
    size: int
    n_labelled: int
    label: str | None
    purity: float | None
    kept: bool


@dataclass
class PseudoLabels:
    """The pool rows that got a pseudo label, in pool order, and every cluster's statistics."""

    pool_index: np.ndarray  # positions into the pool of the rows kept
    texts: list[str]
    labels: list[str]
    cluster: np.ndarray
    purity: np.ndarray
    n_labelled: np.ndarray
    clusters: list[ClusterStats]
    n_pool: int
    n_labelled_rows: int
    settings: PseudoLabelSettings
    dropped_held_out: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        kept = [c for c in self.clusters if c.kept]
        return {
            "clusters": len(self.clusters),
            "clusters_with_label": sum(c.label is not None for c in self.clusters),
            "clusters_kept": len(kept),
            "rows_written": len(self.texts),
            "pool_rows": self.n_pool,
            "labelled_rows": self.n_labelled_rows,
            "mean_purity": float(np.mean([c.purity for c in kept])) if kept else None,
            "label_counts": dict(sorted(Counter(self.labels).items())),
            "min_purity": self.settings.min_purity,
            "min_labelled": self.settings.min_labelled,
            "dropped_held_out": self.dropped_held_out,
        }


def cluster_embeddings(vectors: np.ndarray, n_clusters: int, *, pca_components: int = 50, seed: int = 42) -> np.ndarray:
    """Cluster index per row: L2-normalised rows, PCA (capped by rows and dimensions; 0 skips it), then a seeded
    ``MiniBatchKMeans``."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    components = min(pca_components, x.shape[0], x.shape[1])
    if components >= 2:
        x = PCA(n_components=components, random_state=seed).fit_transform(x)
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=1024)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        assignment = kmeans.fit_predict(x)
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            logger.warning("k-means: %s (lower --n-clusters)", warning.message)
    return np.asarray(assignment, dtype=np.int64)


def cluster_purity(assignment: np.ndarray, labels: Sequence[str], n_clusters: int, *, min_purity: float,
                   min_labelled: int) -> list[ClusterStats]:
    """Per cluster: majority label of the labelled rows (the first ``len(labels)`` rows of ``assignment``, ties
    broken by label order) and its share; no label below ``min_labelled`` labelled members."""
    names, y = np.unique(np.asarray([str(label) for label in labels], dtype=object), return_inverse=True)
    counts = np.zeros((n_clusters, len(names)), dtype=np.int64)
    np.add.at(counts, (assignment[:len(labels)], y), 1)
    sizes = np.bincount(assignment, minlength=n_clusters)
    stats = []
    for k in range(n_clusters):
        n_labelled = int(counts[k].sum())
        label = purity = None
        if n_labelled >= min_labelled:
            top = int(np.argmax(counts[k]))  # the first of equal counts: label order breaks ties
            label, purity = str(names[top]), float(counts[k, top] / n_labelled)
        kept = purity is not None and purity >= min_purity
        stats.append(ClusterStats(k, int(sizes[k]), n_labelled, label, purity, kept))
    return stats


def pseudo_label(embed: Embed, train: TextDataset, pool_texts: Sequence[str],
                 settings: PseudoLabelSettings = PseudoLabelSettings()) -> PseudoLabels:
    """Pseudo labels for ``pool_texts`` from the clusters they share with the labelled ``train`` rows (see the
    module docstring). ``embed`` is called once, with the training texts then the pool texts, and nothing else."""
    settings.validate()
    if train.labels is None:
        raise DataError("pseudo-labelling needs labelled rows to measure the clusters' purity; none were given.")
    if train.text_pairs is not None:
        raise DataError("pseudo-labelling embeds single texts; sentence pairs are not supported.")
    pool = [str(text) for text in pool_texts]
    if not pool:
        raise DataError("there are no unlabelled rows to pseudo-label.")
    if len(train) == 0:
        raise DataError("there are no labelled rows: pass --labelled-file with labelled rows.")
    texts = [str(text) for text in train.texts] + pool
    n_clusters = settings.clusters_for(len(texts), len(set(train.labels)))
    if len(texts) < n_clusters:
        raise DataError(f"{n_clusters} clusters need at least as many rows, found {len(texts)} ({len(train)} "
                        f"labelled, {len(pool)} unlabelled); lower --n-clusters.")
    logger.info("clustering %d labelled and %d unlabelled rows into %d clusters (set with --n-clusters), PCA to at "
                "most %d components (--pca-components), seed %d", len(train), len(pool), n_clusters,
                settings.pca_components, settings.seed)
    vectors = np.asarray(embed(texts))
    if vectors.ndim != 2 or len(vectors) != len(texts) or not np.all(np.isfinite(vectors)):
        raise ModelError(f"the encoder returned embeddings of shape {vectors.shape} for {len(texts)} texts, or "
                         "non-finite values; expected one finite row per text.")
    assignment = cluster_embeddings(vectors, n_clusters, pca_components=settings.pca_components, seed=settings.seed)
    clusters = cluster_purity(assignment, list(train.labels), n_clusters, min_purity=settings.min_purity,
                              min_labelled=settings.min_labelled)
    pool_clusters = assignment[len(train):]
    keep = np.flatnonzero(np.array([c.kept for c in clusters], dtype=bool)[pool_clusters])
    chosen = [clusters[c] for c in pool_clusters[keep]]
    result = PseudoLabels(
        pool_index=keep, texts=[pool[i] for i in keep], labels=[c.label for c in chosen],
        cluster=pool_clusters[keep], purity=np.array([c.purity for c in chosen], dtype=np.float64),
        n_labelled=np.array([c.n_labelled for c in chosen], dtype=np.int64), clusters=clusters, n_pool=len(pool),
        n_labelled_rows=len(train), settings=settings,
    )
    log_summary(result)
    return result


def log_summary(result: PseudoLabels) -> None:
    s = result.summary()
    purity = "n/a" if s["mean_purity"] is None else f"{s['mean_purity']:.3f}"
    logger.info("pseudo-label: %d of %d clusters kept (%d had at least %d labelled members, set with "
                "--min-labelled; kept: purity >= %g, set with --min-purity), %d of %d unlabelled rows labelled, "
                "mean purity of the kept clusters %s", s["clusters_kept"], s["clusters"], s["clusters_with_label"],
                s["min_labelled"], s["min_purity"], s["rows_written"], s["pool_rows"], purity)
    if not s["rows_written"]:
        logger.warning("no cluster reached the purity threshold: lower --min-purity or --min-labelled, change "
                       "--n-clusters, or give more labelled rows")


def pseudo_label_fold(embed: Embed, data: TextDataset, fold: Fold, pool_texts: Sequence[str],
                      settings: PseudoLabelSettings = PseudoLabelSettings(), *,
                      row_ids: Sequence[int] | None = None) -> PseudoLabels:
    """Pseudo labels for one fold: ``data`` is the experiment's rows, ``fold`` their train/val/test rows.

    ``fold`` holds positions into ``data``, or, with ``row_ids`` (the original row number of each row of
    ``data``, as ``LabelledData.row_ids`` gives them), row numbers, as ``Experiment.plan`` does. Only
    ``fold.train`` rows are labelled rows; the validation and test rows are read only to drop pool texts
    equal to one of them (compared case- and space-insensitively) and are never embedded, so a fold's
    pseudo-labelled rows carry nothing of its held-out rows (as long as the encoder itself was not trained
    on them: embed with a pretrained encoder or one trained on this fold's training rows only).
    """
    if data.labels is None:
        raise DataError("pseudo_label_fold needs the experiment's labels.")
    train_rows, val_rows, test_rows = (_positions(part, row_ids, len(data)) for part in (fold.train, fold.val, fold.test))
    train = TextDataset([data.texts[i] for i in train_rows], [data.labels[i] for i in train_rows])
    held_out = {normalise_text(str(data.texts[i])) for rows in (val_rows, test_rows) for i in rows}
    pool = [str(text) for text in pool_texts]
    keep = [i for i, text in enumerate(pool) if normalise_text(text) not in held_out]
    if len(keep) < len(pool):
        logger.info("dropped %d pool texts equal to a validation or test text of the fold", len(pool) - len(keep))
    result = pseudo_label(embed, train, [pool[i] for i in keep], settings)
    result.pool_index = np.asarray(keep, dtype=np.int64)[result.pool_index]  # positions into the pool as given
    result.dropped_held_out = len(pool) - len(keep)
    result.n_pool = len(pool)
    return result


def _positions(rows, row_ids: Sequence[int] | None, n: int) -> np.ndarray:
    """Positions into the data of ``rows``: as given, or looked up among ``row_ids`` (each must be there)."""
    rows = np.asarray(rows, dtype=np.int64)
    if row_ids is None:
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise DataError(f"fold positions must be in [0, {n}); pass row_ids when the fold holds row numbers.")
        return rows
    ids = np.asarray(row_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    found = np.searchsorted(ids, rows, sorter=order)
    found = np.minimum(found, len(ids) - 1)
    positions = order[found]
    if len(rows) and not np.array_equal(ids[positions], rows):
        missing = sorted(set(rows.tolist()) - set(ids.tolist()))[:5]
        raise DataError(f"the fold names rows that are not in the data (e.g. {missing}); pass the data's row_ids.")
    return positions
