"""Clustering pseudo-labels with few labels: a model trained on a fold's small labelled share against the same
model trained on that share plus the pseudo-labelled rest of the fold's training rows, on the same folds, in
one run.

    uv run python bench/bench_pseudo_label.py                          # tweets_3class, 5 folds, 10% labelled
    uv run python bench/bench_pseudo_label.py --data mr --rows 3000 --model minilm

For each backtesting fold: ``--labelled-share`` of the fold's training rows keep their labels (a stratified,
seeded draw); the other training rows are the unlabelled pool (their labels are hidden, and used only to
report how often the pseudo labels are right). ``pseudo_label_fold`` embeds the labelled rows and the pool
with the pretrained all-MiniLM-L6-v2 (mean pooling), clusters them (PCA, MiniBatchKMeans) and labels the pool
rows of clusters whose labelled members agree at least ``--min-purity``; it never sees the fold's validation
or test rows. Both models train with the fold's validation split and are scored on its test split.

Prints per fold the pseudo-labelled rows, their accuracy against the hidden labels and both models' test
macro-F1; then the mean paired difference with the corrected resampled t-test (Nadeau & Bengio) and the
Bayesian correlated t-test (ROPE 0.01), as ``compare-models`` reports them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _labelled_share(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Positions of a stratified ``share`` of ``labels`` (at least 3 per class)."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        keep.extend(rng.choice(where, size=min(len(where), max(3, round(share * len(where)))), replace=False))
    return np.sort(np.asarray(keep, dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["tweets", "mr"], default="tweets")
    parser.add_argument("--rows", type=int, default=3000, help="--data mr: rows sampled from the full MR set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--labelled-share", type=float, default=0.1)
    parser.add_argument("--min-purity", type=float, default=0.8)
    parser.add_argument("--model", default="tfidf_logreg", help="the model config trained on both versions")
    args = parser.parse_args()

    import pandas as pd
    from sklearn.metrics import f1_score

    from mlops.app import Application
    from mlops.experiments.service import Columns, dataset_at
    from mlops.core.model_interface import FitContext
    from mlops.core.text_dataset import TextDataset
    from mlops.augment.pseudo_label import PseudoLabelSettings, pseudo_label_fold
    from mlops.data.splitting import Fold, SplitParameters
    from mlops.core.statistics import bayesian_correlated_ttest, corrected_resampled_ttest
    from models.hf_encoder.embedding import pretrained_embedder

    with tempfile.TemporaryDirectory(prefix="bench-pseudo-") as tmp:
        source = ROOT / "data" / "shapes" / "tweets_3class.csv"
        if args.data == "mr":
            source = Path(tmp) / "mr_rows.csv"
            pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv").sample(n=args.rows, random_state=42).to_csv(
                source, index=False)
        app = Application(Path(tmp) / "artifacts")
        experiment = app.generate_splits("bench", source, Columns(), SplitParameters(cv_folds=args.folds, seed=42))
        data = app.service.load_data(experiment)
        ids = data.row_ids
        assert np.all(np.diff(ids) > 0)
        everything = dataset_at(data, ids)
        texts, labels = np.asarray(everything.texts, dtype=object), np.asarray(everything.labels, dtype=object)
        named = app.resolve_config("bench", args.model)
        embed = pretrained_embedder("sentence-transformers/all-MiniLM-L6-v2")
        settings = PseudoLabelSettings(min_purity=args.min_purity, seed=42)
        diffs, n_train, n_test = [], [], []
        print(f"{source.name}: {args.folds} folds, {args.labelled_share:.0%} of each fold's training rows labelled, "
              f"min purity {args.min_purity}, model {named.name}")
        for k, fold in enumerate(experiment.plan.backtesting):
            train, val, test = (np.searchsorted(ids, part) for part in (fold.train, fold.val, fold.test))
            labelled = train[_labelled_share(labels[train], args.labelled_share, seed=42 + k)]
            pool = np.setdiff1d(train, labelled)
            started = time.perf_counter()
            result = pseudo_label_fold(embed, everything, Fold(train=ids[labelled], val=fold.val, test=fold.test),
                                       list(texts[pool]), settings, row_ids=ids)
            pseudo_s = time.perf_counter() - started
            right = float(np.mean(np.asarray(result.labels, dtype=object) == labels[pool][result.pool_index])) \
                if len(result.labels) else float("nan")
            scores = []
            for extra_texts, extra_labels in (([], []), (result.texts, result.labels)):
                train_set = TextDataset(list(texts[labelled]) + list(extra_texts),
                                        list(labels[labelled]) + list(extra_labels))
                model = named.build().fit(train_set, TextDataset(list(texts[val]), list(labels[val])),
                                          labels=experiment.labels, context=FitContext(seed=42, show_progress=False))
                predicted = np.asarray(experiment.labels, dtype=object)[
                    model.predict_proba(TextDataset(list(texts[test]))).argmax(axis=1)]
                scores.append(f1_score(labels[test], predicted, average="macro"))
            diffs.append(scores[1] - scores[0])
            n_train.append(len(labelled) + len(result.texts))
            n_test.append(len(test))
            print(f"  fold {k}: {len(labelled)} labelled, {len(result.texts)} of {len(pool)} pool rows pseudo-labelled "
                  f"({right:.3f} right) in {pseudo_s:.0f} s; test macro-F1 {scores[0]:.4f} labelled only, "
                  f"{scores[1]:.4f} with pseudo labels ({diffs[-1]:+.4f})", flush=True)
        t = corrected_resampled_ttest(diffs, float(np.mean(n_train)), float(np.mean(n_test)))
        b = bayesian_correlated_ttest(diffs, float(np.mean(n_train)), float(np.mean(n_test)), rope=0.01)
        print(f"with pseudo labels - labelled only: macro-F1 {t.mean:+.4f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], "
              f"p = {t.p_value:.3f}; P(better) {b.prob_better:.2f}, P(equal) {b.prob_rope:.2f}, "
              f"P(worse) {b.prob_worse:.2f}")


if __name__ == "__main__":
    main()
