"""The seed techniques against the same config without them: embedding MixUp and the supervised contrastive
term, backtested on the same folds, with the fold-paired statistics of ``compare-models``, in one run.

    uv run python bench/bench_techniques.py                                # tweets_3class, 5 folds
    uv run python bench/bench_techniques.py --data mr --rows 2000 --folds 5

``--data tweets`` is data/shapes/tweets_3class.csv (1,500 posts, three imbalanced classes); ``--data mr`` samples
``--rows`` rows of the full MR set (seed 42). Each config is the shipped minilm.json's recipe, plus
``mixup: {alpha: 0.4, ratio: 0.5}`` or ``supcon: {weight: 0.1, temperature: 0.1}``; ``--techniques`` may add
``minilm_unweighted`` (the recipe without class weights) and ``minilm_v1`` (the recipe shipped until 2026-12),
which tell the new default's choices apart on the same folds. Prints each config's
mean macro-F1 over the folds, then each technique's paired difference to the plain config with the
corrected resampled t-test (Nadeau & Bengio) and the Bayesian correlated t-test (ROPE 0.01), and the
SupCon run's validation Recall@5 / kNN accuracy against the plain model's embeddings.
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

TECHNIQUES = {  # name: training-argument changes to the shipped minilm.json
    "minilm_plain": {},
    "minilm_mixup": {"mixup": {"alpha": 0.4, "ratio": 0.5}},
    "minilm_supcon": {"supcon": {"weight": 0.1, "temperature": 0.1, "k": 5}},
    "minilm_unweighted": {"class_weight": None},  # the recipe without its class weighting
    "minilm_v1": "v1",  # the recipe shipped until 2026-12 (see bench_defaults.py)
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["tweets", "mr"], default="tweets")
    parser.add_argument("--rows", type=int, default=2000, help="--data mr: rows sampled from the full MR set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--techniques", nargs="+", default=["minilm_plain", "minilm_mixup", "minilm_supcon"],
                        choices=list(TECHNIQUES))
    args = parser.parse_args()

    import pandas as pd

    from mlops.app import Application
    from mlops.experiments.service import Columns, RunType
    from mlops.evaluation.comparison import compare_models
    from mlops.data.splitting import SplitParameters

    shipped = json.loads((ROOT / "model_configs" / "minilm.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-techniques-") as tmp:
        data = ROOT / "data" / "shapes" / "tweets_3class.csv"
        if args.data == "mr":
            data = Path(tmp) / "mr_rows.csv"
            pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv").sample(n=args.rows, random_state=42).to_csv(
                data, index=False)
        app = Application(Path(tmp) / "artifacts")
        app.generate_splits("bench", data, Columns(), SplitParameters(cv_folds=args.folds, seed=42))
        for name in args.techniques:
            if TECHNIQUES[name] == "v1":
                from bench.bench_defaults import MINILM_V1 as config
            else:
                config = {**shipped, "training_arguments": {**shipped["training_arguments"], **TECHNIQUES[name]}}
                config.pop("search_space", None)
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(config))
            started = time.perf_counter()
            app.run_backtesting("bench", [str(path)])
            print(f"{name}: {args.folds} folds in {time.perf_counter() - started:.0f} s", flush=True)
        rows = compare_models(app.service, "bench", RunType.backtesting, baseline="minilm_plain")
        print(f"\n{data.name}, {args.folds}-fold backtest, seed 42")
        for row in rows:
            line = f"  {row['model']:<14} macro-F1 {row['macro_f1_mean']:.4f} +- {row['macro_f1_std']:.4f}"
            if row["model"] != "minilm_plain":
                line += (f"  diff {row['diff_mean']:+.4f} [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}], "
                         f"p = {row['p_value']:.3f}, P(better) {row['prob_better']:.2f}, "
                         f"P(equal) {row['prob_rope']:.2f}, P(worse) {row['prob_worse']:.2f}")
            print(line)
        supcon = Path(tmp) / "artifacts" / "experiments" / "bench" / "runs" / "minilm_supcon" / "backtesting"
        quality = [json.loads(p.read_text())["runtime"].get("embedding_quality")
                   for p in sorted(supcon.glob("fold_*/metrics.json"))]
        if quality and all(quality):
            print("  supcon validation embeddings: Recall@5 " + " ".join(f"{q['recall_at_k']:.3f}" for q in quality)
                  + ", kNN accuracy " + " ".join(f"{q['knn_accuracy']:.3f}" for q in quality))


if __name__ == "__main__":
    main()
