"""generate-splits' planning on large data: grouped (some texts repeated) against ungrouped (every text unique).

    uv run python bench/bench_splits.py [--rows 40000 200000 1000000] [--duplicate-rate 0.05] [--old]

Rows are MR sentences with a numbered suffix (so every text is unique), three classes; then a share of rows
(--duplicate-rate) is replaced by copies of other rows, which makes them leakage groups of 2 or more rows. Both
variants go through the same leakage grouping and ``build_split_plan`` (hold-out, 5 folds with their
train/val splits, the estimate's and final model's val splits); the ratio grouped / ungrouped is the cost of
keeping duplicates together. ``--old`` also times scikit-learn's StratifiedGroupKFold (the splitter before)
on the grouped data, at the smallest size only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def make_rows(n: int, duplicate_rate: float, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    base = pd.read_csv(ROOT / "data" / "sample" / "mr_sample.csv")["text"].tolist()
    texts = [f"{base[i % len(base)]} #{i}" for i in range(n)]
    y = rng.choice(np.array(["negative", "neutral", "positive"]), size=n, p=[0.45, 0.15, 0.40])
    copies = rng.choice(n, size=int(n * duplicate_rate), replace=False)
    sources = rng.choice(n, size=len(copies))
    grouped = list(texts)
    for target, source in zip(copies, sources, strict=True):
        grouped[target] = texts[source]
    return texts, y, grouped


def timed_plan(texts: list[str], y: np.ndarray) -> tuple[float, int]:
    from mlops.data.splitting import SplitParameters, build_split_plan, leakage_groups

    started = time.perf_counter()
    groups = leakage_groups(texts)
    build_split_plan(y, groups, SplitParameters(cv_folds=5, seed=42))
    return time.perf_counter() - started, int((np.bincount(groups) > 1).sum())


def old_sklearn(texts: list[str], y: np.ndarray) -> float:
    from sklearn.model_selection import StratifiedGroupKFold

    from mlops.data.splitting import leakage_groups

    started = time.perf_counter()
    groups = leakage_groups(texts)
    next(StratifiedGroupKFold(5, shuffle=True, random_state=42).split(np.zeros(len(y)), y, groups))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[40_000, 200_000, 1_000_000])
    parser.add_argument("--duplicate-rate", type=float, default=0.05)
    parser.add_argument("--old", action="store_true")
    args = parser.parse_args()
    import resource

    timed_plan(*make_rows(2_000, args.duplicate_rate)[:2])  # imports and first-call costs, outside the figures
    for n in args.rows:
        unique, y, grouped = make_rows(n, args.duplicate_rate)
        plain_s, _ = timed_plan(unique, y)
        grouped_s, n_groups = timed_plan(grouped, y)
        print(f"{n:>9,} rows: ungrouped {plain_s:7.2f} s, grouped {grouped_s:7.2f} s ({n_groups:,} multi-row groups) "
              f"-> {grouped_s / plain_s:.2f}x; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
              flush=True)
    if args.old:
        n = min(args.rows)
        _, y, grouped = make_rows(n, args.duplicate_rate)
        print(f"{n:>9,} rows: scikit-learn StratifiedGroupKFold, one 5-fold split alone: {old_sklearn(grouped, y):.2f} s")


if __name__ == "__main__":
    main()
