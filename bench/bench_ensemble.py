"""Is the ensemble never worse than its better member, and better than TF-IDF where a member is? Backtest
TF-IDF, an encoder and their greedy ensemble on the same folds, fold-paired (compare-models' statistics).

    uv run python bench/bench_ensemble.py                                  # MR 2,000 rows, minilm_v1
    uv run python bench/bench_ensemble.py --datasets tweets_3class sources_4class --encoder minilm --holdout

Per data set: a seeded sample (default 2,000 rows), ``generate-splits`` (cv, 5 folds, seed 42), then
``run-backtesting`` of tfidf_logreg, the encoder (default ``minilm_v1``, bench_defaults' short recipe;
``minilm`` is the shipped default) and ``ensemble`` of the two (Caruana's greedy selection on each fold's val
rows). The ensemble's folds reuse the members' stored val and test predictions (``reuse_member_runs``), so its
backtest trains nothing; ``--retrain-ensemble`` trains the members again inside it instead (same figures, the
members' cost). ``compare-models`` against tfidf_logreg and against the encoder; wall time per backtest. With
``--holdout``, ``estimate-performance`` of the three (the ensemble again reusing its members) and McNemar's
exact test on the hold-out rows.
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
    parser.add_argument("--holdout", action="store_true", help="also estimate-performance on the hold-out")
    parser.add_argument("--retrain-ensemble", action="store_true", help="train the members inside the ensemble")
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
            "training_arguments": {"members": ["tfidf_logreg", encoder], "combiner": "greedy",
                                   "reuse_member_runs": not args.retrain_ensemble}}))
        app = Application(tmp / "artifacts")
        for dataset in args.datasets:
            frame = pd.read_csv(SHAPES[dataset])
            if len(frame) > args.rows:
                frame = frame.sample(args.rows, random_state=7)
            csv = tmp / f"{dataset}.csv"
            group = "source" if "source" in frame else None  # debian_topics: a source package's binaries
            frame[["text", "label"] + ([group] if group else [])].to_csv(csv, index=False)
            app.generate_splits(dataset, csv, Columns(group=group), SplitParameters(cv_folds=5, seed=42))
            configs = ("tfidf_logreg", encoder, str(tmp / "ensemble.json"))
            timings, holdout_s = {}, {}
            for config in configs:
                started = time.perf_counter()
                app.run_backtesting(dataset, [config])
                timings[Path(config).stem] = round(time.perf_counter() - started, 1)
            if args.holdout:
                for config in configs:
                    started = time.perf_counter()
                    app.estimate_performance(dataset, [config])
                    holdout_s[Path(config).stem] = round(time.perf_counter() - started, 1)
            for baseline in ("tfidf_logreg", Path(encoder).stem):
                holdout = ({r["model"]: r for r in app.compare_models(dataset, RunType.performance_estimation,
                                                                        baseline=baseline)} if args.holdout else {})
                for row in app.compare_models(dataset, RunType.backtesting, baseline=baseline):
                    if row["model"] == baseline:
                        continue
                    entry = {"dataset": dataset, "rows": len(frame), "model": row["model"], "baseline": baseline,
                             "macro_f1": row["macro_f1_mean"], "diff": row["diff_mean"], "ci_low": row["diff_ci_low"],
                             "ci_high": row["diff_ci_high"], "p": row["p_value"], "seconds": timings[row["model"]]}
                    if args.holdout:
                        h = holdout[row["model"]]
                        entry["holdout"] = {"macro_f1": h["macro_f1_mean"], "diff": h["diff_mean"],
                                            "mcnemar_p": h.get("mcnemar_p_value"), "seconds": holdout_s[row["model"]]}
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
    print("\n| data | model | macro-F1 (5 folds) | vs | diff [95% CI] | p | backtest s | hold-out (diff, McNemar p) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        h = r.get("holdout")
        cell = f"{h['macro_f1']:.4f} ({h['diff']:+.4f}, {h['mcnemar_p']:.3g})" if h else ""
        print(f"| {r['dataset']} | {r['model']} | {r['macro_f1']:.4f} | {r['baseline']} | {r['diff']:+.4f} "
              f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p']:.3f} | {r['seconds']} | {cell} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
