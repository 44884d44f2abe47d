"""Does `cli audit` find wrong labels? Flip a known share of real labels (seeded), backtest, audit, and score
the flagged rows against the flips; then retrain without them and test the fold-paired difference.

    uv run python bench/bench_audit.py                                  # MR 2,000 at 0/5/10%, TF-IDF and MiniLM
    uv run python bench/bench_audit.py --datasets tweets_3class --rates 0.1 --no-retrain

Per data set: a seeded sample (default 2,000 rows), ``rate`` of ALL its rows get another label (uniformly among
the others, seeded), then ``generate-splits`` (cv, 5 folds, seed 42), ``run-backtesting`` of each config, and
``audit`` with each config alone and with all of them (mean of their out-of-fold probabilities). Precision and
recall of the flipped train-val rows are reported at the tool's own cut-off and at top-k = the number flipped
(where precision = recall), and the same for cleanlab's ``find_label_issues`` (default filter) on the same
probabilities. With retraining: ``audit --retrain-without-flagged`` on the combination, fold-paired difference
per config (all test rows, and test rows not flagged). ``minilm_v1`` is the short MiniLM recipe (3 epochs,
max_length 64): the full default recipe would take hours here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_defaults import MINILM_V1, SHAPES  # noqa: E402


def flipped_copy(source: Path, target: Path, *, rows: int, rate: float, seed: int) -> set[int]:
    """A sample of ``source`` with ``rate`` of its labels changed; returns the flipped row numbers of ``target``."""
    import pandas as pd

    frame = pd.read_csv(source)
    rng = np.random.default_rng(seed)
    if rows and len(frame) > rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), rows, replace=False))].reset_index(drop=True)
    labels = sorted(frame["label"].astype(str).unique())
    flip = np.sort(rng.choice(len(frame), int(round(rate * len(frame))), replace=False))
    new = frame["label"].astype(str).to_numpy(dtype=object)
    for i in flip:
        new[i] = rng.choice([label for label in labels if label != new[i]])
    TRUE_LABELS[str(target)] = frame["label"].astype(str).to_numpy(dtype=object)
    frame["label"] = new
    frame[["text", "label"]].to_csv(target, index=False)
    return set(int(i) for i in flip)


def scores(flagged_ranked: np.ndarray, flipped: set[int], audited: np.ndarray) -> dict:
    truth = flipped & set(int(r) for r in audited)
    flagged = [int(r) for r in flagged_ranked]
    hits = sum(r in truth for r in flagged)
    k = len(truth)
    top = sum(r in truth for r in flagged[:k])
    return {"flagged": len(flagged), "precision": hits / len(flagged) if flagged else 0.0,
            "recall": hits / k if k else 0.0, "k": k, "precision_at_k": top / k if k else 0.0}


def true_label_diffs(app, exp: str, name: str, audit_dir: Path, csv: Path, flipped: set[int],
                     labels: list[str]) -> list[float]:
    """Per fold, retrained minus original macro-F1 against the labels before flipping (the truth)."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from mlops.experiments.service import RunType

    diffs = []
    for k in range(5):
        before = pd.read_csv(app.service.run_dir(exp, name, RunType.backtesting) / f"fold_{k}" / "predictions.csv",
                             dtype={"label": str, "predicted_label": str}, keep_default_na=False)
        after = pd.read_csv(audit_dir / "retrain" / name / f"fold_{k}" / "predictions.csv",
                            dtype={"label": str, "predicted_label": str}, keep_default_na=False)
        true = TRUE_LABELS[str(csv)][before["row_id"].to_numpy()]
        assert (after["row_id"].to_numpy() == before["row_id"].to_numpy()).all()
        diffs.append(f1_score(true, after["predicted_label"], average="macro", labels=labels)
                     - f1_score(true, before["predicted_label"], average="macro", labels=labels))
    return diffs


TRUE_LABELS: dict[str, np.ndarray] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mr_full"], choices=sorted(SHAPES))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.05, 0.10])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--configs", nargs="+", default=["tfidf_logreg", "minilm_v1"])
    parser.add_argument("--retrain-rates", nargs="*", type=float, default=[0.0, 0.10])
    parser.add_argument("--retrain-configs", nargs="+", default=["tfidf_logreg"],
                        help="Configs audited and retrained with --retrain-without-flagged (an inner audit per fold: "
                             "K x (K-1) + K trainings each).")
    parser.add_argument("--output", type=Path, default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()

    from cleanlab.filter import find_label_issues as cleanlab_issues

    from mlops.app import Application
    from mlops.audit.service import AuditSettings
    from mlops.core.metrics import proba_column
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns, RunType

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        configs = []
        for name in args.configs:
            if name == "minilm_v1":
                (tmp / "minilm_v1.json").write_text(json.dumps(MINILM_V1))
                configs.append(str(tmp / "minilm_v1.json"))
            else:
                configs.append(name)
        app = Application(tmp / "artifacts")
        for dataset in args.datasets:
            for rate in args.rates:
                exp = f"{dataset}_{int(rate * 100)}"
                csv = tmp / f"{exp}.csv"
                flipped = flipped_copy(SHAPES[dataset], csv, rows=args.rows, rate=rate, seed=7)
                app.generate_splits(exp, csv, Columns(), SplitParameters(cv_folds=5, seed=42))
                timings = {}
                for config in configs:
                    t0 = time.perf_counter()
                    app.run_backtesting(exp, [config])
                    timings[Path(config).stem] = round(time.perf_counter() - t0, 1)
                experiment = app.service.load_experiment(exp)
                labels = experiment.labels
                audited = experiment.plan.train_val
                groups = [[c] for c in configs] + ([configs] if len(configs) > 1 else [])
                if rate in args.retrain_rates:
                    groups.append([c for c in configs if Path(c).stem in args.retrain_configs])
                for n_group, group in enumerate(groups):
                    retrain = rate in args.retrain_rates and n_group == len(groups) - 1
                    t0 = time.perf_counter()
                    result = app.audit(exp, AuditSettings(model_config_names=group, near_duplicates=(), outliers=False,
                                                          retrain_without_flagged=retrain, force=True))
                    elapsed = time.perf_counter() - t0
                    names = "+".join(Path(c).stem for c in group) + (" (retrain)" if retrain else "")
                    row = {"dataset": dataset, "rate": rate, "models": names, "audit_s": round(elapsed, 1),
                           "backtest_s": {Path(c).stem: timings[Path(c).stem] for c in group},
                           **scores(result.label_issues["row_id"].to_numpy(), flipped, audited)}
                    # cleanlab on the same (mean) probabilities
                    frames = [app.service.run_dir(exp, Path(c).stem, RunType.backtesting) for c in group]
                    import pandas as pd

                    parts = []
                    for run_dir in frames:
                        part = pd.concat([pd.read_csv(run_dir / f"fold_{k}" / "predictions.csv",
                                                      dtype={"label": str}, keep_default_na=False)
                                          for k in range(5)]).sort_values("row_id")
                        parts.append(part)
                    proba = np.mean([p[[proba_column(lab) for lab in labels]].to_numpy() for p in parts], axis=0)
                    y = parts[0]["label"].map({lab: j for j, lab in enumerate(labels)}).to_numpy()
                    ranked = cleanlab_issues(y, proba, return_indices_ranked_by="self_confidence")
                    cl = scores(parts[0]["row_id"].to_numpy()[ranked], flipped, audited)
                    row["cleanlab"] = {k: cl[k] for k in ("flagged", "precision", "recall", "precision_at_k")}
                    if retrain:
                        row["retrain"] = {}
                        for name, value in result.summary["retrain"].items():
                            row["retrain"][name] = {key: value[key] for key in
                                                    ("diff_mean", "ci_low", "ci_high", "p_value", "rows_removed_mean")}
                            row["retrain"][name]["true_label_diff"] = true_label_diffs(
                                app, exp, name, result.directory, csv, flipped, labels)
                    results.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| data | flipped | models | flagged | precision | recall | P@k (k) | cleanlab P / R / P@k |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r["cleanlab"]
        print(f"| {r['dataset']} | {r['rate']:.0%} | {r['models']} | {r['flagged']} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['precision_at_k']:.3f} ({r['k']}) | {c['precision']:.3f} / {c['recall']:.3f} / "
              f"{c['precision_at_k']:.3f} |")
    for r in results:
        for name, v in (r.get("retrain") or {}).items():
            true = np.mean(v["true_label_diff"])
            print(f"retrain {r['dataset']} {r['rate']:.0%} {name} without ~{v['rows_removed_mean']:.0f} rows per fold: "
                  f"{v['diff_mean']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] p={v['p_value']:.3f} on the given "
                  f"labels; {true:+.4f} on the true labels")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
