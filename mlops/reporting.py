"""Read-only views over the artifacts: experiments with their stages, and models ranked by metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops.artifacts import MODEL_FILE
from mlops.errors import ExperimentError, MlopsError
from mlops.experiment_service import FINAL_RECORD_FILE, METRICS_FILE, SUMMARY_FILE, ExperimentService, RunType
from mlops.io import read_json


def _final_model_dir(runs_dir: Path) -> Path | None:
    default = runs_dir / RunType.final_model.value
    if (default / MODEL_FILE).is_file():
        return default
    record = runs_dir / FINAL_RECORD_FILE
    if record.is_file():
        candidate = Path(read_json(record)["model_dir"])
        if (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def _config_names(service: ExperimentService, experiment_id: str) -> list[str]:
    runs = service.experiment_dir(experiment_id) / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def experiment_rows(service: ExperimentService) -> list[dict[str, Any]]:
    """One row per (experiment, model config), or one per experiment without runs."""
    rows: list[dict[str, Any]] = []
    for experiment_id in service.experiment_ids():
        try:
            rows.extend(_experiment_rows(service, experiment_id))
        except (MlopsError, KeyError, TypeError) as exc:  # one damaged experiment must not hide the others
            rows.append({"experiment_id": experiment_id, "model": None, "stages": f"unreadable: {exc}"})
    return rows


def _experiment_rows(service: ExperimentService, experiment_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    experiment = service.load_experiment(experiment_id)
    base = {
        "experiment_id": experiment_id,
        "input_file": experiment.info["input_file"],
        "rows": experiment.info["rows_used"],
        "labels": len(experiment.labels),
        "strategy": experiment.info["split_parameters"]["backtesting_strategy"],
    }
    names = _config_names(service, experiment_id)
    if not names:
        return [{**base, "model": None, "stages": "", "backtesting_macro_f1": None, "holdout_macro_f1": None,
                 "final_model": None}]
    for name in names:
        runs_dir = service.experiment_dir(experiment_id) / "runs" / name
        stages, backtest, holdout = [], None, None
        summary = runs_dir / RunType.backtesting.value / SUMMARY_FILE
        if summary.is_file():
            data = read_json(summary)
            stages.append(f"backtesting({data['n_folds']} folds)")
            backtest = data["macro_f1"]["mean"]
        estimate = runs_dir / RunType.performance_estimation.value / METRICS_FILE
        if estimate.is_file():
            stages.append("estimate")
            holdout = read_json(estimate)["metrics"]["macro_f1"]
        final_dir = _final_model_dir(runs_dir)
        if final_dir is not None:
            stages.append("final")
        rows.append({**base, "model": name, "stages": ", ".join(stages), "backtesting_macro_f1": backtest,
                     "holdout_macro_f1": holdout, "final_model": str(final_dir) if final_dir else None})
    return rows


def compare_models(service: ExperimentService, experiment_id: str, run_type: RunType) -> list[dict[str, Any]]:
    """Models of one experiment ranked by mean macro-F1, with std and the per-fold values."""
    service.load_experiment(experiment_id)  # clear error for an unknown experiment
    rows = []
    for name in _config_names(service, experiment_id):
        summary_path = service.run_dir(experiment_id, name, run_type) / SUMMARY_FILE
        if not summary_path.is_file():
            continue
        summary = read_json(summary_path)
        rows.append({
            "model": name,
            "n_folds": summary["n_folds"],
            "macro_f1_mean": summary["macro_f1"]["mean"],
            "macro_f1_std": summary["macro_f1"]["std"],
            "accuracy_mean": summary["accuracy"]["mean"],
            "accuracy_std": summary["accuracy"]["std"],
            "macro_f1_per_fold": summary["macro_f1"]["per_fold"],
        })
    if not rows:
        raise ExperimentError(
            f"no {run_type.value} results in experiment {experiment_id!r} yet; run "
            f"`cli {'run-backtesting' if run_type is RunType.backtesting else 'estimate-performance'}` first."
        )
    rows.sort(key=lambda r: r["macro_f1_mean"], reverse=True)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows
