"""Long texts: does keeping the head and the tail, or reading every window, beat the head alone? MiniLM on
long_reviews with a token budget that cuts most texts, head-only against head_tail and windows, next to TF-IDF,
on the same hold-out.

    uv run python bench/bench_long_documents.py                         # max_length 64 (most texts are cut)
    uv run python bench/bench_long_documents.py --max-length 128 --strategies head windows

long_reviews (``data/prepare_shapes.py``): 1,600 texts of about 100 words. ``generate-splits`` (train-val, 20%
hold-out, seed 42), then ``estimate-performance`` of tfidf_logreg and of bench_defaults' short MiniLM recipe
(3 epochs) with ``truncation: head``, ``head_tail`` and ``windows`` at ``--max-length``; ``compare-models`` on the hold-out
(McNemar's exact test). Prints each run's training seconds and how many texts were cut.
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
    parser.add_argument("--dataset", default="long_reviews", choices=sorted(SHAPES))
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--strategies", nargs="+", default=["head", "head_tail", "windows"],
                        choices=["head", "head_tail", "windows"], help="the first is the baseline")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from mlops.app import Application
    from mlops.core.choices import BacktestingStrategy
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns, RunType

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        configs = ["tfidf_logreg"]
        for strategy in args.strategies:
            config = json.loads(json.dumps(MINILM_V1))
            config["training_arguments"].update(max_length=args.max_length, truncation=strategy)
            path = tmp / f"minilm_{strategy}.json"
            path.write_text(json.dumps(config))
            configs.append(str(path))
        app = Application(tmp / "artifacts")
        app.generate_splits("long", SHAPES[args.dataset], Columns(), SplitParameters(
            backtesting_strategy=BacktestingStrategy.train_val, seed=42))
        seconds = {}
        for config in configs:
            started = time.perf_counter()
            [result] = app.estimate_performance("long", [config])
            seconds[Path(config).stem] = round(time.perf_counter() - started, 1)
        for baseline in ("tfidf_logreg", f"minilm_{args.strategies[0]}"):
            for row in app.compare_models("long", RunType.performance_estimation, baseline=baseline):
                if row["model"] == baseline:
                    continue
                record = json.loads((app.service.run_dir("long", row["model"], RunType.performance_estimation)
                                     / "metrics.json").read_text())
                entry = {"model": row["model"], "baseline": baseline, "macro_f1": row["macro_f1_mean"],
                         "accuracy": row["accuracy_mean"], "diff": row["diff_mean"], "mcnemar_p": row["mcnemar_p_value"],
                         "seconds": seconds[row["model"]],
                         "truncated": (record.get("runtime") or {}).get("truncated")}
                rows.append(entry)
                print(json.dumps(entry), flush=True)
    print(f"\n| model (max_length {args.max_length}) | hold-out macro-F1 | accuracy | vs | diff | McNemar p | "
          "seconds | texts cut (train / test) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cut = r["truncated"] or {}
        print(f"| {r['model']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | {r['baseline']} | {r['diff']:+.4f} | "
              f"{r['mcnemar_p']:.3f} | {r['seconds']} | {cut.get('train', '-')} / {cut.get('predict', '-')} |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
