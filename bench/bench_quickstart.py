"""Which MiniLM recipe gives the quickstart its figures in a fifth of the time? Every recipe on the quickstart's
own splits (the bundled MR sample, 3 folds, seed 42), in one run: the 3-fold backtest, the hold-out estimate,
their wall time and samples/s, and McNemar's exact test against TF-IDF on the 600 hold-out rows.

    uv run python bench/bench_quickstart.py                      # tfidf_logreg, minilm_quick and its variants
    uv run python bench/bench_quickstart.py --configs tfidf_logreg minilm_quick minilm   # + the full recipe

The variants differ from ``minilm_quick`` in one or two arguments each (written here, so the comparison does not
move with the configs): ``quick_all_layers`` fine-tunes every layer, ``quick_frozen3`` freezes one more layer,
``quick_frozen3_b32`` also takes batches of 32 at a higher learning rate, ``quick_dropout`` keeps MiniLM's own
dropout. Run it alone: the times are the figures.
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

VARIANTS = {
    "quick_all_layers": {"frozen_layers": 0},
    "quick_frozen3": {"frozen_layers": 3},
    "quick_frozen3_b32": {"frozen_layers": 3, "batch_size": 32, "learning_rate": 1.5e-4},
    "quick_b32": {"batch_size": 32, "learning_rate": 1.5e-4},
    "quick_b32_lr2": {"batch_size": 32, "learning_rate": 2e-4},
    "quick_dropout": {"dropout": None},  # the checkpoint's own dropout (0.1), as minilm_quick had until 2026-12-07
}


def _config_arg(name: str, folder: Path) -> str:
    if name not in VARIANTS:
        return name
    config = json.loads((ROOT / "model_configs" / "minilm_quick.json").read_text())
    config["training_arguments"].update(VARIANTS[name])
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


def _fold_facts(directory: Path) -> tuple[float, float]:
    """(training seconds, training samples/s) summed over a run's folds."""
    seconds = samples = 0.0
    for metrics in sorted(directory.glob("fold_*/metrics.json")):
        runtime = json.loads(metrics.read_text()).get("runtime", {})
        for record in runtime.get("history", []):
            seconds += record["seconds"]
            samples += record["samples_per_second"] * record["seconds"]
    return seconds, (samples / seconds if seconds else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+",
                        default=["tfidf_logreg", "minilm_quick", "quick_dropout", "quick_all_layers", "quick_frozen3",
                                 "quick_frozen3_b32"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from mlops.app import SAMPLE_DATA, Application
    from mlops.data.splitting import BacktestingStrategy, SplitParameters
    from mlops.experiments.service import Columns, RunType

    with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as tmp:
        app = Application(Path(tmp) / "artifacts")
        app.generate_splits("qs", SAMPLE_DATA, Columns(text="text", target="label"), SplitParameters(
            cv_folds=3, seed=args.seed, backtesting_strategy=BacktestingStrategy.cv))
        times = {}
        for name in args.configs:
            config = _config_arg(name, Path(tmp))
            started = time.perf_counter()
            app.run_backtesting("qs", [config])
            backtest = time.perf_counter() - started
            app.estimate_performance("qs", [config])
            times[Path(config).stem] = (backtest, time.perf_counter() - started - backtest)
            print(f"{name}: done in {sum(times[Path(config).stem]):.0f} s", flush=True)
        folds = {row["model"]: row for row in app.compare_models("qs", RunType.backtesting)}
        holdout = {row["model"]: row for row in app.compare_models("qs", RunType.performance_estimation,
                                                                    baseline="tfidf_logreg")}
        print("\nconfig | backtest macro-F1 (per fold) | backtest s | train samples/s | hold-out accuracy | "
              "estimate s | vs TF-IDF on the hold-out (McNemar)")
        for name, (backtest, estimate) in times.items():
            row, est = folds[name], holdout[name]
            _, rate = _fold_facts(app.service.run_dir("qs", name, RunType.backtesting))
            per_fold = ", ".join(f"{v:.3f}" for v in row["macro_f1_per_fold"])
            versus = ("baseline" if name == "tfidf_logreg" else
                      f"{est['n_discordant_model_right']} vs {est['n_discordant_baseline_right']}, "
                      f"p = {est['mcnemar_p_value']:.4f}")
            print(f"{name} | {row['macro_f1_mean']:.4f} ({per_fold}) | {backtest:.0f} | {rate:.1f} | "
                  f"{est['accuracy_mean']:.4f} | {estimate:.0f} | {versus}")


if __name__ == "__main__":
    main()
