"""Few labels: SetFit against fine-tuned MiniLM and TF-IDF at 8, 16, 64 and 256 labelled rows per class.

    uv run python bench/bench_few_shot.py                                    # MR, 1,200 rows, 3 folds
    uv run python bench/bench_few_shot.py --datasets tweets_3class --rows 1500

Per data set: a seeded sample, ``generate-splits`` (cv, --folds folds, seed 42), then per config
``learning-curve --per-class 8 16 64 256``: every model trains on the same nested per-class subsets of each
fold's training rows and is scored on the fold's test rows. Printed: macro-F1 per size and model (mean over
folds), and per size the fold-paired difference of setfit_minilm against each other model (corrected resampled
t-test, Nadeau & Bengio), with each config's training time per fit. The shipped configs are used as they are.
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

from bench_defaults import SHAPES  # noqa: E402

SIZES = [8, 16, 64, 256]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mr_full"], choices=sorted(SHAPES))
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg", "minilm", "setfit_minilm"])
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--artifacts-dir", type=Path, help="keep the experiments here (default: a temporary folder); "
                        "a rerun resumes every finished (fold, size) run and reuses the splits")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from mlops.app import Application
    from mlops.core.statistics import corrected_resampled_ttest
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.artifacts_dir or Path(tmp)
        app = Application(root / "artifacts")
        for dataset in args.datasets:
            frame = pd.read_csv(SHAPES[dataset])
            if len(frame) > args.rows:
                frame = frame.sample(args.rows, random_state=7)
            csv = root / f"{dataset}.csv"
            if dataset not in app.service.experiment_ids():
                root.mkdir(parents=True, exist_ok=True)
                frame[["text", "label"]].to_csv(csv, index=False)
                app.generate_splits(dataset, csv, Columns(), SplitParameters(cv_folds=args.folds, seed=42))
            experiment = app.service.load_experiment(dataset)
            n_train = float(np.mean([len(f.train) for f in experiment.plan.backtesting]))
            n_test = float(np.mean([len(f.test) for f in experiment.plan.backtesting]))
            scores = {}
            for config in args.configs:
                started = time.perf_counter()
                summary = app.learning_curve(dataset, config, per_class=args.sizes).summary
                scores[config] = {(p["per_class"], p["fold"]): p["macro_f1"] for p in summary["points"]}
                row = {"dataset": dataset, "rows": len(frame), "config": config,
                       "curve_s": round(time.perf_counter() - started, 1),
                       "per_size": [{"per_class": p["per_class"], "rows": round(p["rows_mean"]),
                                     "macro_f1": round(p["macro_f1_mean"], 4), "std": round(p["macro_f1_std"], 4),
                                     "train_s": round(p["train_s_mean"], 1)} for p in summary["per_fraction"]]}
                results.append(row)
                print(json.dumps(row), flush=True)
            if "setfit_minilm" in scores:
                for other in [c for c in args.configs if c != "setfit_minilm"]:
                    for size in args.sizes:
                        diffs = [scores["setfit_minilm"][(size, k)] - scores[other][(size, k)]
                                 for k in range(1, args.folds + 1)]
                        test = corrected_resampled_ttest(diffs, n_train, n_test)
                        row = {"dataset": dataset, "pair": f"setfit_minilm - {other}", "per_class": size,
                               "diff": round(test.mean, 4), "ci": [round(test.ci_low, 4), round(test.ci_high, 4)],
                               "p": round(test.p_value, 3), "fold_diffs": [round(d, 4) for d in diffs]}
                        results.append(row)
                        print(json.dumps(row), flush=True)
    print("\n| data | config | macro-F1 at " + " / ".join(f"{s}" for s in args.sizes) + " per class | train s per fit |")
    print("|---|---|---|---|")
    for r in [r for r in results if "per_size" in r]:
        f1 = " / ".join(f"{p['macro_f1']:.3f}" for p in r["per_size"])
        seconds = " / ".join(f"{p['train_s']:.0f}" for p in r["per_size"])
        print(f"| {r['dataset']} | {r['config']} | {f1} | {seconds} |")
    print("\n| data | pair | per class | difference [95%] | p | fold differences |")
    print("|---|---|---|---|---|---|")
    for r in [r for r in results if "pair" in r]:
        print(f"| {r['dataset']} | {r['pair']} | {r['per_class']} | {r['diff']:+.4f} [{r['ci'][0]:+.3f}, "
              f"{r['ci'][1]:+.3f}] | {r['p']:.3f} | {', '.join(f'{d:+.3f}' for d in r['fold_diffs'])} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
