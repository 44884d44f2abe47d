"""Would more labels help, and which rows should be labelled? learning-curve and active-learning-sim on real data.

    uv run python bench/bench_labelling.py                                   # MR 2,000 and two built shapes, TF-IDF
    uv run python bench/bench_labelling.py --datasets mr_full --configs minilm_v1 --no-simulation --folds 3

Per data set: a seeded sample (default 2,000 rows; the shapes are used whole when smaller), ``generate-splits``
(cv, --folds folds, seed 42); then per config ``learning-curve`` (fractions 0.125, 0.25, 0.5, 1: the fitted
doubling gain and the extrapolation check, fitted on fractions up to 0.5) and ``active-learning-sim``
(entropy, margin, diverse and random; 50 labelled rows to start, 50 per round, 10 rounds). Prints each
command's wall time. ``minilm_v1`` is bench_defaults' short MiniLM recipe.
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
    parser.add_argument("--datasets", nargs="+", default=["mr_full", "tweets_3class", "sources_4class"],
                        choices=sorted(SHAPES))
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg"])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-simulation", action="store_true")
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import pandas as pd

    from mlops.app import Application
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns
    from mlops.labelling.simulation import SimulationSettings

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "minilm_v1.json").write_text(json.dumps(MINILM_V1))
        app = Application(tmp / "artifacts")
        for dataset in args.datasets:
            frame = pd.read_csv(SHAPES[dataset])
            if len(frame) > args.rows:
                frame = frame.sample(args.rows, random_state=7)
            csv = tmp / f"{dataset}.csv"
            frame[["text", "label"]].to_csv(csv, index=False)
            app.generate_splits(dataset, csv, Columns(), SplitParameters(cv_folds=args.folds, seed=42))
            for config in args.configs:
                name = str(tmp / "minilm_v1.json") if config == "minilm_v1" else config
                row = {"dataset": dataset, "rows": len(frame), "config": config}
                if not args.no_curve:
                    started = time.perf_counter()
                    curve = app.learning_curve(dataset, name, [0.125, 0.25, 0.5, 1.0]).summary
                    row["curve_s"] = round(time.perf_counter() - started, 1)
                    row["per_fraction"] = [(round(p["rows_mean"]), round(p["macro_f1_mean"], 4))
                                           for p in curve["per_fraction"]]
                    row["doubling"] = {k: curve["doubling"][k] for k in ("gain", "ci_low", "ci_high", "ceiling")}
                    row["extrapolation_check"] = curve["extrapolation_check"]
                if not args.no_simulation:
                    started = time.perf_counter()
                    sim = app.active_learning_sim(dataset, name, SimulationSettings(
                        strategies=["entropy", "margin", "diverse", "random"])).summary
                    row["simulation_s"] = round(time.perf_counter() - started, 1)
                    row["random_final"] = sim["random_final_macro_f1"]
                    row["outcome"] = sim["outcome"]
                results.append(row)
                print(json.dumps(row), flush=True)
    print("\n| data | config | macro-F1 at 12.5/25/50/100% (rows) | doubling gain [95%] | extrapolation error | "
          "curve s |")
    print("|---|---|---|---|---|---|")
    for r in [r for r in results if "per_fraction" in r]:
        d, e = r["doubling"], r["extrapolation_check"]
        points = ", ".join(f"{f:.3f} ({n})" for n, f in r["per_fraction"])
        interval = f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["ci_low"] is not None else ""
        gain = f"{d['gain']:+.4f} {interval}" if d["gain"] is not None else "-"
        error = f"{e['error']:+.4f}" if e else "-"
        print(f"| {r['dataset']} | {r['config']} | {points} | {gain} | {error} | {r['curve_s']} |")
    print("\n| data | config | random final macro-F1 (labels) | strategy: final macro-F1, labels to reach random's "
          "final (share) | stop hint | simulation s |")
    print("|---|---|---|---|---|---|")
    for r in [r for r in results if "outcome" in r]:
        parts, stops = [], []
        for strategy, o in r["outcome"].items():
            if strategy == "random":
                continue
            reach = ("never" if o["labels_to_reach_random_final"] is None else
                     f"{o['labels_to_reach_random_final']:.0f} ({o['share_of_random_labels']:.0%})")
            parts.append(f"{strategy}: {o['final_macro_f1']:.3f}, {reach}")
            stops.append(f"{strategy}: {'-' if o['stop_hint'] is None else o['stop_hint']['labelled']}")
        final = r["outcome"]["random"]
        print(f"| {r['dataset']} | {r['config']} | {r['random_final']:.3f} ({final['final_labelled']:.0f}) | "
              f"{'; '.join(parts)} | {'; '.join(stops)} | {r['simulation_s']} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
