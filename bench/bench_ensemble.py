"""Is the ensemble never worse than its better member, and better than TF-IDF where a member is? Backtest
TF-IDF, MiniLM and their greedy ensemble on the same folds, fold-paired (compare-models' statistics).

    uv run python bench/bench_ensemble.py                                  # MR 2,000 rows
    uv run python bench/bench_ensemble.py --datasets tweets_3class --encoder minilm

Per data set: a seeded sample (default 2,000 rows), ``generate-splits`` (cv, 5 folds, seed 42), then
``run-backtesting`` of tfidf_logreg, the encoder (default ``minilm_v1``, bench_defaults' short recipe; the
shipped ``minilm`` takes hours here) and ``ensemble`` of the two (Caruana's greedy selection on each fold's val
rows), and ``compare-models`` against tfidf_logreg and against the encoder. Wall time per backtest.
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
sys.path.insert(0, str(ROOT / "bench"))

from bench_defaults import MINILM_V1, SHAPES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mr_full"], choices=sorted(SHAPES))
    parser.add_argument("--encoder", default="minilm_v1")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import pandas as pd

    from mlops.app import Application
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns, RunType

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = args.encoder
        if encoder == "minilm_v1":
            (tmp / "minilm_v1.json").write_text(json.dumps(MINILM_V1))
            encoder = str(tmp / "minilm_v1.json")
        (tmp / "ensemble.json").write_text(json.dumps({
            "module_path": "models.ensemble.model", "class_name": "EnsembleClassifier",
            "training_arguments": {"members": ["tfidf_logreg", encoder], "combiner": "greedy"}}))
        app = Application(tmp / "artifacts")
        for dataset in args.datasets:
            frame = pd.read_csv(SHAPES[dataset])
            if len(frame) > args.rows:
                frame = frame.sample(args.rows, random_state=7)
            csv = tmp / f"{dataset}.csv"
            frame[["text", "label"]].to_csv(csv, index=False)
            app.generate_splits(dataset, csv, Columns(), SplitParameters(cv_folds=5, seed=42))
            timings = {}
            for config in ("tfidf_logreg", encoder, str(tmp / "ensemble.json")):
                started = time.perf_counter()
                app.run_backtesting(dataset, [config])
                timings[Path(config).stem] = round(time.perf_counter() - started, 1)
            for baseline in ("tfidf_logreg", Path(encoder).stem):
                for row in app.compare_models(dataset, RunType.backtesting, baseline=baseline):
                    if row["model"] == baseline:
                        continue
                    entry = {"dataset": dataset, "rows": len(frame), "model": row["model"], "baseline": baseline,
                             "macro_f1": row["macro_f1_mean"], "diff": row["diff_mean"], "ci_low": row["diff_ci_low"],
                             "ci_high": row["diff_ci_high"], "p": row["p_value"], "seconds": timings[row["model"]]}
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
    print("\n| data | model | macro-F1 (5 folds) | vs | diff [95% CI] | p | backtest s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['model']} | {r['macro_f1']:.4f} | {r['baseline']} | {r['diff']:+.4f} "
              f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p']:.3f} | {r['seconds']} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
