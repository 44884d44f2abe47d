"""Backtesting several models: the local executor against `--executor ray`, wall time, in one run.

    uv run python bench/bench_executors.py                                     # tfidf_logreg + minilm, 5 folds, 2,000 rows
    uv run python bench/bench_executors.py --models tfidf_logreg tfidf_svm --rows 1000    # a quick look

Both runs backtest the same models on the same splits (same seed), each in its own artifacts folder; the
Ray run starts a local Ray instance sized to the machine (or joins --ray-address) and its start-up is
part of its wall time. Prints both wall times, the ratio local / ray, and whether every fold's metrics
are identical (an encoder whose config leaves num_threads unset gets a thread count per task under Ray,
so its figures can differ in the last digits; fix num_threads for bit-identical results).
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


def _fold_metrics(artifacts: Path, model: str) -> list[dict]:
    base = artifacts / "experiments" / "bench" / "runs" / model / "backtesting"
    return [json.loads((d / "metrics.json").read_text())["metrics"] for d in sorted(base.glob("fold_*"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tfidf_logreg", "minilm"])
    parser.add_argument("--rows", type=int, default=2000, help="rows sampled from the full MR set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args()

    from mlops.app import Application
    from mlops.executors import ExecutorOptions
    from mlops.experiments.service import Columns
    from mlops.data.splitting import SplitParameters

    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        data = Path(tmp) / "mr_rows.csv"
        full = pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv")
        full.sample(n=min(args.rows, len(full)), random_state=args.seed).to_csv(data, index=False)
        seconds = {}
        for executor in ("local", "ray"):
            app = Application(Path(tmp) / executor)
            app.generate_splits("bench", data, Columns(), SplitParameters(cv_folds=args.folds, seed=args.seed))
            started = time.perf_counter()
            app.run_backtesting("bench", args.models, executor=ExecutorOptions(executor, args.ray_address))
            seconds[executor] = time.perf_counter() - started
            print(f"{executor}: {len(args.models)} models x {args.folds} folds in {seconds[executor]:.1f} s")
        print(f"local / ray wall time: {seconds['local'] / seconds['ray']:.2f}x")
        for model in args.models:
            same = _fold_metrics(Path(tmp) / "local", model) == _fold_metrics(Path(tmp) / "ray", model)
            print(f"{model}: per-fold metrics {'identical' if same else 'DIFFERENT'} between the executors")


if __name__ == "__main__":
    main()
