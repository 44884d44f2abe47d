"""Multi-label thresholds: per label, shared, or shrunk towards the shared one? On the Debian tags of
bench_multi_label.py (the same 1,200-row sample and splits), each fold's model is trained once; its val rows
tune the thresholds under every strategy, and its test rows (the 3 backtest folds, then the hold-out) score them.

    uv run python bench/bench_thresholds.py                          # tfidf_logreg, shrinkage 0, 2, 5, 10, 20
    uv run python bench/bench_thresholds.py --configs tfidf_logreg tfidf_svm --rows 3000

Strategies: ``0.5`` everywhere; ``per-label`` (each label's own F1-best threshold, shrinkage 0); ``shared`` (the
one threshold best for micro-F1 over all labels); ``shrink k``: a label with p positive val rows gets
(p * own + k * shared) / (p + k) (mlops.core.multilabel.tune_thresholds). Printed: the backtest mean and per-fold
micro- and macro-F1, the hold-out's, and each strategy's fold-paired difference from per-label.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "data" / "shapes" / "debian_works_with.csv"


def strategies(shrinkages: list[float]) -> dict[str, float | None]:
    """{name: shrinkage}; None: every threshold at 0.5; inf: the shared threshold for every label."""
    named = {"0.5": None, "per-label": 0.0, "shared": float("inf")}
    named.update({f"shrink {k:g}": k for k in shrinkages})
    return named


def thresholds_for(y_val, proba_val, shrinkage: float | None):
    import numpy as np

    from mlops.core.multilabel import tune_thresholds

    if shrinkage is None:
        return np.full(proba_val.shape[1], 0.5)
    return tune_thresholds(y_val, proba_val, shrinkage=shrinkage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg"])
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--shrinkage", type=float, nargs="+", default=[2, 5, 10, 20])
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from mlops.app import Application
    from mlops.core.model_interface import FitContext
    from mlops.core.multilabel import MULTI_LABEL, Task, label_matrix, multi_label_metrics
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.fold import seed_everything
    from mlops.experiments.service import Columns, RunType, dataset_at

    named = strategies(args.shrinkage)
    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.read_csv(DATA, keep_default_na=False)
        if len(frame) > args.rows:
            frame = frame.sample(args.rows, random_state=7)
        csv = Path(tmp) / "debian.csv"
        frame.to_csv(csv, index=False)
        app = Application(Path(tmp) / "artifacts")
        experiment = app.generate_splits("debian", csv, Columns(target="tags", group="source"),
                                         SplitParameters(cv_folds=args.folds, seed=42),
                                         task=Task(MULTI_LABEL, separator="|"))
        labels = experiment.labels
        data = app.service.load_data(experiment)
        folds = (app.service.folds(experiment, RunType.backtesting)
                 + app.service.folds(experiment, RunType.performance_estimation))
        results = {}
        for config in args.configs:
            scores = {name: [] for name in named}  # per fold (backtest folds, then the hold-out)
            for fold in folds:
                train, val, test = (dataset_at(data, rows) for rows in (fold.train, fold.val, fold.test))
                seed_everything(experiment.seed)
                model = app.catalog.resolve(config).build()
                model.fit(train, val, labels=labels, context=FitContext(seed=experiment.seed, show_progress=False))
                proba_val, proba_test = model.predict_proba(val), model.predict_proba(test)
                y_val = label_matrix(val.labels, labels)
                for name, shrinkage in named.items():
                    m = multi_label_metrics(test.labels, proba_test, labels,
                                            thresholds=thresholds_for(y_val, proba_val, shrinkage))
                    scores[name].append({"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]})
            results[config] = scores
            print(json.dumps({config: scores}), flush=True)

    k = args.folds
    print(f"\n| config | thresholds | backtest micro-F1 (folds) | backtest macro-F1 (folds) | hold-out micro / macro "
          f"| micro, macro minus per-label ({k} folds paired) |")
    print("|---|---|---|---|---|---|")
    for config, scores in results.items():
        base = scores["per-label"]
        for name, folds_scores in scores.items():
            cells = []
            for metric in ("micro_f1", "macro_f1"):
                values = [s[metric] for s in folds_scores[:k]]
                cells.append(f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
            diff = [np.mean([s[m] - b[m] for s, b in zip(folds_scores[:k], base[:k])]) for m in ("micro_f1", "macro_f1")]
            hold = folds_scores[k]
            print(f"| {config} | {name} | {cells[0]} | {cells[1]} | {hold['micro_f1']:.3f} / {hold['macro_f1']:.3f} "
                  f"| {diff[0]:+.4f}, {diff[1]:+.4f} |")


if __name__ == "__main__":
    main()
