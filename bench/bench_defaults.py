"""Do the shipped defaults hold across data shapes? The TF-IDF baseline, the old and the new default MiniLM
recipe (and more configs with --configs), on the same train-val splits of each data set, in one run.

    uv run python bench/bench_defaults.py                                   # the three built shapes, then MR
    uv run python bench/bench_defaults.py --shapes tweets_3class --configs tfidf_logreg minilm

Data sets (``data/prepare_shapes.py`` builds the first three from VADER's source tarball; MR is the full set):
tweets_3class (1,500 posts, 60/25/15% classes), sources_4class (2,000 snippets, four sources), long_reviews
(1,600 texts of about 100 words), mr_full (10,605 movie-review sentences); on request (``--shapes``)
debian_topics (1,320 Debian package descriptions in six sections, median 201 tokens, split with their
``source`` column as the group; ``data/prepare_debian_topics.py``). Each gets ``generate-splits
--backtesting-strategy train-val`` (20% hold-out, seed 42) and one ``estimate-performance`` per config: the
model trains on the train split, stops early on the validation split, and is scored on the untouched hold-out.

Prints, per data set and config: hold-out macro-F1 (95% bootstrap interval), accuracy, wall seconds, the
optimiser updates taken against those planned, and the epochs run, then the macro-F1 difference of each config
to tfidf_logreg with McNemar's exact test on the shared hold-out rows (``compare-models``). ``minilm_v1`` is the
recipe minilm.json shipped until 2026-12 (3 epochs, patience 1, max_length 64, no class weights) and
``tfidf_logreg_v1`` tfidf_logreg.json's (no class weights), written here so the comparison does not move with the configs.
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

SHAPES = {
    "tweets_3class": ROOT / "data" / "shapes" / "tweets_3class.csv",
    "sources_4class": ROOT / "data" / "shapes" / "sources_4class.csv",
    "long_reviews": ROOT / "data" / "shapes" / "long_reviews.csv",
    "debian_topics": ROOT / "data" / "shapes" / "debian_topics.csv",
    "mr_full": ROOT / "data" / "mr" / "mr_full.csv",
}
MINILM_V1 = {
    "module_path": "models.hf_encoder.model", "class_name": "HFEncoderClassifier",
    "model_name": "sentence-transformers/all-MiniLM-L6-v2",
    "training_arguments": {"epochs": 3, "batch_size": 32, "learning_rate": 8e-05, "weight_decay": 0.01,
                           "warmup_ratio": 0.1, "scheduler": "linear", "max_length": 64,
                           "early_stopping_patience": 1, "precision": "auto"},
}

TFIDF_LOGREG_V1 = {  # tfidf_logreg.json until 2026-12: no class weights
    "module_path": "models.tfidf_linear.model", "class_name": "TfidfLinearClassifier",
    "training_arguments": {"classifier": "logistic_regression", "C": 4.0, "word_ngram_range": [1, 2],
                           "char_ngram_range": [2, 5], "sublinear_tf": True},
}
OLD_RECIPES = {"minilm_v1": MINILM_V1, "tfidf_logreg_v1": TFIDF_LOGREG_V1}


def _config_arg(name: str, folder: Path) -> str:
    if name in OLD_RECIPES:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(OLD_RECIPES[name]))
        return str(path)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tweets_3class", "sources_4class", "long_reviews", "mr_full"],
                        choices=list(SHAPES))
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg_v1", "tfidf_logreg", "minilm_v1", "minilm"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from mlops.app import Application
    from mlops.experiments.service import Columns, RunType
    from mlops.evaluation.comparison import compare_models
    from mlops.data.splitting import BacktestingStrategy, SplitParameters

    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        app = Application(Path(tmp) / "artifacts")
        for shape in args.shapes:
            header = SHAPES[shape].open(encoding="utf-8").readline()
            group = "source" if "source" in header.strip().split(",") else None  # debian_topics
            app.generate_splits(shape, SHAPES[shape], Columns(group=group), SplitParameters(
                backtesting_strategy=BacktestingStrategy("train-val"), seed=args.seed))
            lines = []
            for name in args.configs:
                started = time.perf_counter()
                [result] = app.estimate_performance(shape, [_config_arg(name, Path(tmp))])
                seconds = time.perf_counter() - started
                record = json.loads((result.directory / "metrics.json").read_text())
                metrics, runtime = record["metrics"], record.get("runtime", {})
                low, high = metrics["macro_f1_ci"]
                recipe = runtime.get("recipe", {})
                updates = (f"updates {runtime['epochs_run'] * recipe['updates_per_epoch']} of "
                           f"{recipe['planned_updates']} planned, " if "planned_updates" in recipe else "")
                lines.append(f"  {result.config_name:<14} macro-F1 {metrics['macro_f1']:.4f} [{low:.3f}, {high:.3f}]  "
                             f"accuracy {metrics['accuracy']:.4f}  {seconds:6.0f} s  {updates}"
                             f"epochs {runtime.get('epochs_run', '-')}, recipe {recipe.get('epochs_reason', '-')}")
                print(f"{shape} / {result.config_name}: done in {seconds:.0f} s", flush=True)
            rows = compare_models(app.service, shape, RunType.performance_estimation, baseline="tfidf_logreg")
            print(f"\n{shape} ({SHAPES[shape].name}), hold-out of {rows[0].get('n_test')} rows:")
            print("\n".join(lines))
            for row in rows:
                if row["model"] != "tfidf_logreg":
                    print(f"  {row['model']} - tfidf_logreg: macro-F1 {row['diff_mean']:+.4f}, McNemar p = "
                          f"{row['mcnemar_p_value']:.4g} ({row['n_discordant_model_right']} vs "
                          f"{row['n_discordant_baseline_right']} rows only one of them got right)")
            print(flush=True)


if __name__ == "__main__":
    main()
