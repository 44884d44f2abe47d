"""How optimistic is the backtest of a tuned config, and what does `tune --nested` give instead? In one run.

    uv run python bench/bench_nested_tune.py                                   # tfidf_logreg, 30 trials, 2,000 MR rows
    uv run python bench/bench_nested_tune.py --inner-folds 3                   # trials scored on 3 inner folds
    uv run python bench/bench_nested_tune.py --model minilm --n-trials 10      # an encoder (hours on 2 cores)

On one experiment (``--rows`` rows sampled from the full MR set, seed 42, 20% hold-out, ``--folds`` folds):
1. ``tune`` (median pruner): trials on the estimate's train split, which holds every fold's test rows; its
   tuned config is kept as ``<model>_tuned_flat``.
2. ``tune --nested`` with the same study name (the estimate study is reused) plus one study per fold on that
   fold's own train split: ``<model>_tuned``, whose backtest trains fold k with fold k's best values.
3. The backtests of the default config, the flat tuned config (optimistic) and the nested one, paired fold by
   fold as ``compare-models`` does, and the hold-out estimates of the default and the tuned values (the hold-out
   was never seen by a trial).

Prints each backtest's mean macro-F1, the paired differences to the default with the corrected resampled
t-test, the flat minus nested gap (the optimism), each fold study's best values, and the hold-out figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tfidf_logreg", help="a config with a search_space")
    parser.add_argument("--rows", type=int, default=2000, help="rows sampled from the full MR set")
    parser.add_argument("--n-trials", type=int, default=30, help="per study")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--inner-folds", type=int, default=None, help="score trials on K inner folds")
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    args = parser.parse_args()

    from mlops.app import Application
    from mlops.experiments.service import Columns, RunType
    from mlops.data.splitting import SplitParameters
    from mlops.tuning.service import TuneOptions

    scratch = tempfile.TemporaryDirectory(prefix="bench-nested-")
    artifacts = args.artifacts_dir or Path(scratch.name)
    artifacts.mkdir(parents=True, exist_ok=True)
    data = artifacts / "mr_rows.csv"
    full = pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv")
    full.sample(n=min(args.rows, len(full)), random_state=args.seed).to_csv(data, index=False)
    app = Application(artifacts)
    app.generate_splits("bench", data, Columns(), SplitParameters(cv_folds=args.folds, seed=args.seed), force=True)

    started = time.perf_counter()
    flat = app.tune("bench", args.model, TuneOptions(n_trials=args.n_trials, study_name=args.model,
                                                     inner_folds=args.inner_folds))
    flat_seconds = time.perf_counter() - started
    flat_path = artifacts / f"{args.model}_tuned_flat.json"
    shutil.copyfile(flat.best_config_path, flat_path)
    print(f"estimate study: {len(flat.trials)} trials in {flat_seconds:.0f} s, best validation macro-F1 "
          f"{flat.best_value:.4f}, {json.dumps(flat.best_params)}", flush=True)
    started = time.perf_counter()
    nested = app.tune("bench", args.model, TuneOptions(n_trials=args.n_trials, study_name=args.model, nested=True,
                                                       inner_folds=args.inner_folds))
    print(f"fold studies: {args.folds} x {args.n_trials} trials in {time.perf_counter() - started:.0f} s")
    for fold in nested.folds:
        print(f"  fold {fold['fold'] + 1}: best validation macro-F1 {fold['best_value']:.4f}, "
              f"{json.dumps(fold['best_params'])}")

    tuned, flat_name = nested.best_config_path.stem, flat_path.stem
    for name in (args.model, str(flat_path), tuned):
        app.run_backtesting("bench", [name], force=True)
    for name in (args.model, tuned):
        app.estimate_performance("bench", [name], force=True)
    rows = {r["model"]: r for r in app.compare_models("bench", RunType.backtesting, baseline=args.model)}
    print(f"\nbacktest, {args.folds} folds, macro-F1 (mean over folds; diff to {args.model} paired by fold, "
          "corrected resampled t-test):")
    for name, what in ((args.model, "default"), (flat_name, "tuned, flat: trials saw the folds' test rows"),
                       (tuned, "tuned, nested: each fold tuned on its own train split")):
        row = rows[name]
        diff = "" if name == args.model else (f", diff {row['diff_mean']:+.4f} [{row['diff_ci_low']:+.4f}, "
                                              f"{row['diff_ci_high']:+.4f}], p {row['p_value']:.4f}")
        print(f"  {name:<28} {row['macro_f1_mean']:.4f} ({what}){diff}")
    gap = [a - b for a, b in zip(rows[flat_name]["macro_f1_per_fold"], rows[tuned]["macro_f1_per_fold"], strict=True)]
    print(f"  flat - nested (the optimism): {sum(gap) / len(gap):+.4f} mean, per fold "
          f"{', '.join(f'{g:+.4f}' for g in gap)}")
    holdout = {r["model"]: r for r in app.compare_models("bench", RunType.performance_estimation,
                                                         baseline=args.model)}
    h, hb = holdout[tuned], holdout[args.model]
    print(f"hold-out macro-F1 (never seen by a trial): default {hb['macro_f1_mean']:.4f}, tuned {h['macro_f1_mean']:.4f}, "
          f"diff {h['diff_mean']:+.4f}, McNemar p {h['mcnemar_p_value']:.4f}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
