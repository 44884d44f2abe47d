"""Does fixing it matter? Backtest again, each fold without the rows an inner audit of its own train and val rows
flags (an inner cross-validation of the same configs on those rows only), fold-paired with the original backtest
on the same test rows. The fold's test rows and the hold-out decide nothing and are never trained on."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.audit.label_issues import RankBy, find_label_issues
from mlops.core.io import read_json, write_json
from mlops.core.metrics import compute_metrics
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.core.statistics import corrected_resampled_ttest
from mlops.experiments.fold import fit_and_predict, predictions_frame
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, Experiment, ExperimentService, RunType,
                                       dataset_at)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainPlan:
    rank_by: RankBy = "self_confidence"
    top_k: int | None = None  # the share top_k / train-val rows of each fold's rows; None: every flagged row
    device: str | None = None
    show_progress: bool = True


def _inner_flags(experiment: Experiment, configs: list[NamedConfig], data, k: int, rows: np.ndarray,
                 plan: RetrainPlan, work_dir: Path) -> np.ndarray:
    """Row ids flagged among ``rows`` (fold k's train and val rows) by an inner cross-validation over those
    rows only, so that fold k's test rows decide nothing about what is removed before scoring on them."""
    from mlops.data.splitting import grouped_fold_ids, leakage_groups

    labels = experiment.labels
    frame = data.frame.loc[rows]
    y = frame["label"].map({label: j for j, label in enumerate(labels)}).to_numpy(dtype=np.int64)
    groups = leakage_groups(frame["text"].tolist(), frame["text_pair"].tolist() if "text_pair" in frame else None)
    n_inner = max(2, len(experiment.plan.backtesting) - 1)
    inner = grouped_fold_ids(y, groups, n_inner, experiment.seed + k)
    probas = []
    for named in configs:
        proba = np.zeros((len(rows), len(labels)))
        for j in range(n_inner):
            test_pos, rest = np.flatnonzero(inner == j), np.flatnonzero(inner != j)
            val_pick = grouped_fold_ids(y[rest], groups[rest], 10, experiment.seed + k) == 0
            outcome = fit_and_predict(
                named.for_backtesting_fold(k), dataset_at(data, rows[rest[~val_pick]]),
                dataset_at(data, rows[rest[val_pick]]), dataset_at(data, rows[test_pos]), labels,
                FitContext(seed=experiment.seed, work_dir=work_dir, device=plan.device,
                           show_progress=plan.show_progress))
            proba[test_pos] = outcome.proba
        probas.append(proba)
    issues = find_label_issues(y, np.mean(probas, axis=0), rank_by=plan.rank_by)
    ranked = issues.ranked
    if plan.top_k is not None:  # the same share of rows as --top-k is of the train-val rows
        share = plan.top_k / len(experiment.plan.train_val)
        ranked = ranked[: int(round(share * len(rows)))]
    return rows[ranked]

def retrain_without_flagged(service: ExperimentService, experiment: Experiment, configs: list[NamedConfig], data,
                            plan: RetrainPlan, directory: Path, audit_flags: np.ndarray) -> dict[str, Any]:
    """Backtest each config again, each fold without the rows an inner audit of its own train and val rows
    flags; fold-paired against the original backtest on the same (all) test rows."""
    labels = experiment.labels
    folds = experiment.plan.backtesting
    per_config: dict[str, dict[str, list]] = {named.name: {"folds": [], "diffs": [], "n_train": [], "n_test": []}
                                              for named in configs}
    for k, fold in enumerate(folds):
        with tempfile.TemporaryDirectory(prefix="audit-retrain-") as work_dir:
            logger.info("retrain fold %d/%d: inner audit of its %d train and val rows", k + 1, len(folds),
                        len(fold.train) + len(fold.val))
            flagged = _inner_flags(experiment, configs, data, k, np.concatenate([fold.train, fold.val]), plan,
                                   Path(work_dir))
            train = fold.train[~np.isin(fold.train, flagged)]
            val = fold.val[~np.isin(fold.val, flagged)]
            test = dataset_at(data, fold.test)
            for named in configs:
                logger.info("retraining %s fold %d/%d without %d flagged rows (train %d -> %d, val %d -> %d)",
                            named.name, k + 1, len(folds), len(flagged), len(fold.train), len(train),
                            len(fold.val), len(val))
                outcome = fit_and_predict(
                    named.for_backtesting_fold(k), dataset_at(data, train), dataset_at(data, val), test, labels,
                    FitContext(seed=experiment.seed, work_dir=Path(work_dir), device=plan.device,
                               show_progress=plan.show_progress))
                metrics = compute_metrics(test.labels, outcome.proba, labels)
                original_dir = service.run_dir(experiment.experiment_id, named.name, RunType.backtesting)
                original = read_json(original_dir / f"fold_{k}" / METRICS_FILE)["metrics"]
                fold_dir = directory / named.name / f"fold_{k}"
                fold_dir.mkdir(parents=True, exist_ok=True)
                predictions_frame(fold.test, test, outcome.proba, labels).to_csv(fold_dir / PREDICTIONS_FILE,
                                                                                 index=False)
                removed = {"train": len(fold.train) - len(train), "val": len(fold.val) - len(val)}
                write_json(fold_dir / METRICS_FILE, {
                    "metrics": metrics, "timings": outcome.timings, "removed_row_ids": flagged.tolist(),
                    "rows": {"train": len(train), "val": len(val), "test": len(fold.test), "removed": removed}})
                entry = per_config[named.name]
                entry["diffs"].append(metrics["macro_f1"] - original["macro_f1"])
                entry["n_train"].append(len(train))
                entry["n_test"].append(len(fold.test))
                entry["folds"].append({
                    "fold": k + 1, "macro_f1": metrics["macro_f1"], "original_macro_f1": original["macro_f1"],
                    "removed_train": removed["train"], "removed_val": removed["val"],
                    "removed_also_flagged_by_audit": int(np.isin(flagged, audit_flags).sum())})
    result = {}
    for name, entry in per_config.items():
        test = corrected_resampled_ttest(entry["diffs"], float(np.mean(entry["n_train"])),
                                         float(np.mean(entry["n_test"])))
        result[name] = {"folds": entry["folds"], "diff_mean": test.mean, "ci_low": test.ci_low,
                        "ci_high": test.ci_high, "p_value": test.p_value,
                        "rows_removed_mean": float(np.mean([f["removed_train"] + f["removed_val"]
                                                            for f in entry["folds"]]))}
    return result
