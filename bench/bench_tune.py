"""`cli tune` with and without pruning, then the honest comparison of the tuned config with the default one.

    uv run python bench/bench_tune.py                          # 20 MiniLM trials x 2 on 2,000 MR rows (hours on 2 cores)
    uv run python bench/bench_tune.py --steps 100 400          # the same, with train_steps searched in [100, 400]
    uv run python bench/bench_tune.py --model tfidf_logreg --rows 600 --n-trials 4    # a quick look

Prints, from this one run: per study (median pruner, no pruner) the trials finished (complete / pruned),
wall time and best validation macro-F1, with the ratios pruned / unpruned; then the 5-fold backtest and
the hold-out estimate of the tuned config against the default one, with the fold-paired statistics of
`compare-models` (corrected resampled t-test, Bayesian correlated t-test). The tuned config is the
pruned study's best. Everything goes to a scratch artifacts folder (or --artifacts-dir).

``--steps LOW HIGH`` searches the config's ``train_steps`` in that range instead of its own (a copy of the
config with that one change, written in the artifacts folder), so the trials cost less; the default it is
compared with stays the shipped config.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _narrowed(model: str, steps: list[int], folder: Path) -> str:
    """A copy of config ``model`` whose search covers ``train_steps`` in ``steps``; its path."""
    from mlops.core.catalog import ModelCatalog

    data = json.loads(ModelCatalog().path_of(model).read_text())
    data.setdefault("search_space", {})["train_steps"] = {"type": "int", "low": steps[0], "high": steps[1]}
    path = folder / f"{model}_steps{steps[0]}to{steps[1]}.json"
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a config with a search_space (default minilm)")
    parser.add_argument("--rows", type=int, default=2000, help="rows sampled from the full MR set")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="search train_steps in [LOW, HIGH] instead of the config's range")
    args = parser.parse_args()

    from mlops.app import Application
    from mlops.experiments.service import Columns, RunType
    from mlops.data.splitting import SplitParameters
    from mlops.tuning.service import TuneOptions

    scratch = tempfile.TemporaryDirectory(prefix="bench-tune-")
    artifacts = args.artifacts_dir or Path(scratch.name)
    data = artifacts / "mr_rows.csv"
    artifacts.mkdir(parents=True, exist_ok=True)
    full = pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv")
    full.sample(n=min(args.rows, len(full)), random_state=args.seed).to_csv(data, index=False)
    app = Application(artifacts)
    app.generate_splits("bench", data, Columns(), SplitParameters(cv_folds=args.folds, seed=args.seed), force=True)

    searched = args.model if args.steps is None else _narrowed(args.model, args.steps, artifacts)
    studies = {}
    for pruner in ("none", "median"):
        started = time.perf_counter()
        result = app.tune("bench", searched, TuneOptions(n_trials=args.n_trials, study_name=f"{args.model}_{pruner}",
                                                           pruner=pruner, executor=args.executor))
        states = [t["state"] for t in result.trials]
        studies[pruner] = {"seconds": time.perf_counter() - started, "complete": states.count("COMPLETE"),
                           "pruned": states.count("PRUNED"), "best": result.best_value,
                           "config": result.best_config_path}
        print(f"study pruner={pruner}: {len(states)} trials ({studies[pruner]['complete']} complete, "
              f"{studies[pruner]['pruned']} pruned) in {studies[pruner]['seconds']:.0f} s, best validation "
              f"macro-F1 {result.best_value:.4f}, params {result.best_params}")
    a, b = studies["median"], studies["none"]
    print(f"pruned / unpruned: time {a['seconds'] / b['seconds']:.2f}x, best validation macro-F1 "
          f"{a['best'] - b['best']:+.4f}, trials completed {a['complete']} vs {b['complete']}")

    tuned = Path(a["config"]).stem
    for name in (args.model, tuned):
        app.run_backtesting("bench", [name], force=True)
        app.estimate_performance("bench", [name], force=True)
    rows = {r["model"]: r for r in app.compare_models("bench", RunType.backtesting, baseline=args.model)}
    row, base = rows[tuned], rows[args.model]
    print(f"backtest ({args.folds} folds) macro-F1: default {base['macro_f1_mean']:.4f}, tuned {row['macro_f1_mean']:.4f}; "
          f"diff {row['diff_mean']:+.4f} [{row['diff_ci_low']:+.4f}, {row['diff_ci_high']:+.4f}], p {row['p_value']:.4f}, "
          f"P(better/equal/worse) {row['prob_better']:.2f}/{row['prob_rope']:.2f}/{row['prob_worse']:.2f}")
    print("  (the backtest folds' test rows were among the trials' training rows: this diff is somewhat optimistic)")
    holdout = {r["model"]: r for r in app.compare_models("bench", RunType.performance_estimation, baseline=args.model)}
    h, hb = holdout[tuned], holdout[args.model]
    print(f"hold-out macro-F1 (never seen by a trial): default {hb['macro_f1_mean']:.4f}, tuned {h['macro_f1_mean']:.4f}, "
          f"McNemar p {h.get('mcnemar_p_value')}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
