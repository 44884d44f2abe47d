"""Read-only views over the artifacts: experiments with their stages, and models ranked by metric with paired
statistics against a baseline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError


from mlops.core.config import ModelConfig, backtest_caveat
from mlops.core.errors import ExperimentError, MlopsError
from mlops.core.io import read_json
from mlops.core.statistics import (bayesian_correlated_ttest, corrected_resampled_ttest, discordant_pairs,
                                   mcnemar_exact_p_value)
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, RUN_FILE, SUMMARY_FILE,
                                       Experiment, ExperimentService, RunType)

#: The metrics compare-models ranks and tests by (per-fold values in each fold's metrics.json); the last three
#: exist for multi-label experiments only (where accuracy is subset accuracy).
COMPARISON_METRICS = ("macro_f1", "accuracy", "micro_f1", "samples_f1", "subset_accuracy")
MULTI_LABEL_ONLY = ("micro_f1", "samples_f1", "subset_accuracy")
#: What must be equal for two runs' folds to be the same rows: the data and the split parameters.
SPLIT_FINGERPRINT = ("input_sha256", "split_parameters")
FOLD_STATISTICS = ("diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "prob_better", "prob_rope", "prob_worse")
ROW_STATISTICS = ("n_discordant_model_right", "n_discordant_baseline_right", "mcnemar_p_value")

logger = logging.getLogger(__name__)


def stale_fold_count(experiment: Experiment, fold_paths: list[Path]) -> int:
    """How many of these metrics.json files were made on other data or split parameters than the experiment's."""
    return sum(not experiment.made_on_current_splits(read_json(path)) for path in fold_paths if path.is_file())


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
    for name in _config_names(service, experiment_id):
        runs_dir = service.experiment_dir(experiment_id) / "runs" / name
        stages, backtest, holdout = [], None, None
        summary = runs_dir / RunType.backtesting.value / SUMMARY_FILE
        folds = sorted((runs_dir / RunType.backtesting.value).glob(f"fold_*/{METRICS_FILE}"))
        if folds and stale_fold_count(experiment, folds):  # not this experiment's splits: no score to show
            stages.append(f"backtesting(stale: {stale_fold_count(experiment, folds)} folds on other splits)")
        elif folds and service.changed_config(experiment_id, name, RunType.backtesting):
            stages.append("backtesting(stale: config changed)")
        elif summary.is_file():
            data = read_json(summary)
            stages.append(f"backtesting({data['n_folds']} folds)")
            backtest = data["macro_f1"]["mean"]
        elif folds:
            stages.append(f"backtesting(incomplete: {len(folds)} folds)")
        estimate = runs_dir / RunType.performance_estimation.value / METRICS_FILE
        if estimate.is_file() and stale_fold_count(experiment, [estimate]):
            stages.append("estimate(stale: other splits)")
        elif estimate.is_file() and service.changed_config(experiment_id, name, RunType.performance_estimation):
            stages.append("estimate(stale: config changed)")
        elif estimate.is_file():
            stages.append("estimate")
            holdout = read_json(estimate)["metrics"]["macro_f1"]
        final_dir = service.final_model_dir(experiment_id, name)
        if final_dir is not None:
            stages.append("final")
        if not stages:  # a run that failed before its first fold was complete: no results to show
            continue
        rows.append({**base, "model": name, "stages": ", ".join(stages), "backtesting_macro_f1": backtest,
                     "holdout_macro_f1": holdout, "final_model": str(final_dir) if final_dir else None})
    if not rows:
        return [{**base, "model": None, "stages": "", "backtesting_macro_f1": None, "holdout_macro_f1": None,
                 "final_model": None}]
    return rows


def compare_models(service: ExperimentService, experiment_id: str, run_type: RunType, *, metric: str = "macro_f1",
                   baseline: str | None = None, rope: float = 0.01) -> list[dict[str, Any]]:
    """Models of one experiment ranked by the mean of ``metric``, each with paired statistics against ``baseline``.

    ``baseline`` defaults to the best-ranked model. With two or more folds every row gets the mean fold
    difference (model - baseline) with the corrected resampled t-test and the Bayesian correlated t-test
    (ROPE ``rope``); with one fold (train-val backtesting, the hold-out estimate) there is no variance
    across folds, so those are None and McNemar's exact test on the shared test rows is given instead.
    The baseline's own row has None statistics.
    """
    if metric not in COMPARISON_METRICS:
        raise ExperimentError(f"unknown metric {metric!r}; choose one of {', '.join(COMPARISON_METRICS)}.")
    if not rope >= 0:
        raise ExperimentError(f"--rope must be >= 0, got {rope}.")
    experiment = service.load_experiment(experiment_id)  # clear error for an unknown experiment
    if metric in MULTI_LABEL_ONLY and not experiment.task.multi_label:
        raise ExperimentError(f"--metric {metric} is for multi-label experiments; {experiment_id!r} has one label per "
                              "row: use macro_f1 or accuracy.")
    rows = _ranked_rows(service, experiment, run_type, metric)
    names = [row["model"] for row in rows]
    baseline = baseline or names[0]
    if baseline not in names:
        raise ExperimentError(
            f"--baseline {baseline!r} has no {run_type.value} results in experiment {experiment_id!r}; "
            f"models with results: {', '.join(names)}."
        )
    records = {row["model"]: _fold_records(service, experiment_id, row["model"], run_type, row["n_folds"])
               for row in rows}
    for row in rows:
        row.update(_paired_statistics(service, experiment, run_type, row["model"], baseline, records, metric, rope))
        if len(records[row["model"]]) == 1:
            row.update(_single_split_intervals(records[row["model"]][0]))
    return rows


def _single_split_intervals(record: dict[str, Any]) -> dict[str, Any]:
    """A one-fold run's test rows and 95% intervals (None for a fold made before they were recorded)."""
    metrics = record["metrics"]
    return {"n_test": record["rows"]["test"], "accuracy_ci": metrics.get("accuracy_ci"),
            "macro_f1_ci": metrics.get("macro_f1_ci")}


def _ranked_rows(service: ExperimentService, experiment: Experiment, run_type: RunType,
                 metric: str) -> list[dict[str, Any]]:
    experiment_id = experiment.experiment_id
    rows = []
    for name in _config_names(service, experiment_id):
        summary_path = service.run_dir(experiment_id, name, run_type) / SUMMARY_FILE
        if not summary_path.is_file():
            continue
        fold_paths = [d / METRICS_FILE for d in _fold_dirs(service, experiment_id, name, run_type,
                                                           read_json(summary_path)["n_folds"])]
        if stale := stale_fold_count(experiment, fold_paths):
            logger.warning("%s: left out, %d of its %s folds were made on other data or splits than the experiment's "
                           "current ones; rerun `cli %s --experiment-id %s --model-config-name %s --force`", name,
                           stale, run_type.value, _command(run_type), experiment_id, name)
            continue
        if changed := service.changed_config(experiment_id, name, run_type):
            logger.warning("%s: left out, %s; rerun `cli %s --experiment-id %s --model-config-name %s --force`",
                           name, changed, _command(run_type), experiment_id, name)
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
            "accuracy_per_fold": summary["accuracy"]["per_fold"],
            **{f"{metric}_{part}": summary[metric][part] for part in ("mean", "std", "per_fold")},
            "caveat": _caveat(service, experiment_id, name, run_type),
        })
    if not rows:
        raise ExperimentError(
            f"no {run_type.value} results in experiment {experiment_id!r} yet; run "
            f"`cli {_command(run_type)}` first."
        )
    rows.sort(key=lambda r: r[f"{metric}_mean"], reverse=True)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def _caveat(service: ExperimentService, experiment_id: str, name: str, run_type: RunType) -> str | None:
    """Why this run's scores are optimistic (a config tuned on this experiment's folds' test rows), or None."""
    path = service.run_dir(experiment_id, name, run_type) / RUN_FILE
    if run_type is not RunType.backtesting or not path.is_file():
        return None
    try:
        config = ModelConfig.model_validate(read_json(path)["config"])
    except (ValidationError, KeyError, TypeError):  # a run record of another version: no tuning record to read
        return None
    return backtest_caveat(config, experiment_id)


def _command(run_type: RunType) -> str:
    return "run-backtesting" if run_type is RunType.backtesting else "estimate-performance"


def _fold_dirs(service: ExperimentService, experiment_id: str, name: str, run_type: RunType,
               n_folds: int) -> list[Path]:
    run_dir = service.run_dir(experiment_id, name, run_type)
    return [run_dir / f"fold_{k}" for k in range(n_folds)] if run_type is RunType.backtesting else [run_dir]


def _fold_records(service: ExperimentService, experiment_id: str, name: str, run_type: RunType,
                  n_folds: int) -> list[dict[str, Any]]:
    """Each fold's metrics.json (identity, metrics, row counts), in fold order."""
    records = []
    for directory in _fold_dirs(service, experiment_id, name, run_type, n_folds):
        path = directory / METRICS_FILE
        record = read_json(path) if path.is_file() else None
        if record is None or "identity" not in record or "rows" not in record:
            raise ExperimentError(
                f"{path} is missing or lacks its identity or row counts, so {name}'s folds cannot be paired; "
                f"rerun `cli {_command(run_type)} --experiment-id {experiment_id} --model-config-name {name} --force`."
            )
        records.append(record)
    return records


def _paired_statistics(service: ExperimentService, experiment: Experiment, run_type: RunType, name: str,
                       baseline: str, records: dict[str, list[dict[str, Any]]], metric: str,
                       rope: float) -> dict[str, Any]:
    single = len(records[baseline]) == 1
    result: dict[str, Any] = {"baseline": baseline, **dict.fromkeys(FOLD_STATISTICS)}
    if single:
        result.update(dict.fromkeys(ROW_STATISTICS))
    if name == baseline:
        return {**result, "note": "baseline"}
    _check_same_splits(experiment, run_type, name, baseline, records)
    model_folds, baseline_folds = records[name], records[baseline]
    diffs = [float(m["metrics"][metric]) - float(b["metrics"][metric])
             for m, b in zip(model_folds, baseline_folds, strict=True)]
    if single:
        b, c = _discordant_rows(service, experiment.experiment_id, run_type, name, baseline)
        return {**result, "diff_mean": diffs[0], "n_discordant_model_right": b, "n_discordant_baseline_right": c,
                "mcnemar_p_value": mcnemar_exact_p_value(b, c),
                "note": "1 fold: no variance across folds, so no t-test; McNemar's exact test on the shared test rows"}
    n_train = sum(r["rows"]["train"] for r in model_folds) / len(model_folds)
    n_test = sum(r["rows"]["test"] for r in model_folds) / len(model_folds)
    test = corrected_resampled_ttest(diffs, n_train, n_test)
    posterior = bayesian_correlated_ttest(diffs, n_train, n_test, rope=rope)
    return {**result, "diff_mean": test.mean, "diff_ci_low": test.ci_low, "diff_ci_high": test.ci_high,
            "p_value": test.p_value, "prob_better": posterior.prob_better, "prob_rope": posterior.prob_rope,
            "prob_worse": posterior.prob_worse, "note": None}


def _fingerprint_differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """What differs between two identities' data fingerprint and split parameters, in words."""
    found = []
    if first.get("input_sha256") != second.get("input_sha256"):
        found.append(f"input_sha256 {str(first.get('input_sha256'))[:12]} vs {str(second.get('input_sha256'))[:12]}")
    params_a, params_b = first.get("split_parameters") or {}, second.get("split_parameters") or {}
    for key in sorted(set(params_a) | set(params_b)):
        if params_a.get(key) != params_b.get(key):
            found.append(f"split parameter {key} {params_a.get(key)!r} vs {params_b.get(key)!r}")
    return found


def _check_same_splits(experiment: Experiment, run_type: RunType, name: str, baseline: str,
                       records: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse to pair runs whose folds are not the same rows (other data, other split parameters, other fold count)."""
    model_folds, baseline_folds = records[name], records[baseline]
    current = {key: experiment.info.get(key) for key in SPLIT_FINGERPRINT}
    n_folds = len(experiment.plan.backtesting) if run_type is RunType.backtesting else 1
    stale = [who for who in (name, baseline) if len(records[who]) != n_folds
             or any(_fingerprint_differences(record["identity"], current) for record in records[who])]
    fix = "; ".join(f"`cli {_command(run_type)} --experiment-id {experiment.experiment_id} --model-config-name {who} "
                    "--force`" for who in (stale or [name, baseline]))
    fix = f"rerun {'the out-of-date run' if len(stale) == 1 else 'them'} on the experiment's current splits with {fix}"
    if len(model_folds) != len(baseline_folds):
        raise ExperimentError(
            f"cannot compare {name} with baseline {baseline}: {name} has {len(model_folds)} {run_type.value} "
            f"fold(s) and {baseline} has {len(baseline_folds)}, so their scores are not paired; {fix}."
        )
    for k, (model_record, baseline_record) in enumerate(zip(model_folds, baseline_folds, strict=True)):
        differences = _fingerprint_differences(model_record["identity"], baseline_record["identity"])
        if differences:
            raise ExperimentError(
                f"cannot compare {name} with baseline {baseline}: their {run_type.value} fold {k + 1} was made from "
                f"different data or splits ({'; '.join(differences)}; {name} vs {baseline}), so their scores are "
                f"not paired; {fix}."
            )


def _discordant_rows(service: ExperimentService, experiment_id: str, run_type: RunType, name: str,
                     baseline: str) -> tuple[int, int]:
    """(b, c) over the single fold's test rows, matched by row_id: rows only the model / only the baseline got right."""
    import pandas as pd

    frames = []
    for who in (name, baseline):
        path = _fold_dirs(service, experiment_id, who, run_type, 1)[0] / PREDICTIONS_FILE
        if not path.is_file():
            raise ExperimentError(f"{path} is missing; rerun `cli {_command(run_type)} --experiment-id "
                                  f"{experiment_id} --model-config-name {who} --force`.")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "predicted_labels" in frame:  # label sets, compared whole (a row is right when its set is exact)
            frame = frame.rename(columns={"predicted_labels": "predicted_label"})
        frames.append(frame[["row_id", "label", "predicted_label"]])
    merged = frames[0].merge(frames[1], on="row_id", suffixes=("_model", "_baseline"))
    paired = all(frame.row_id.is_unique for frame in frames) and len(merged) == len(frames[0]) == len(frames[1])
    if not paired or (merged.label_model != merged.label_baseline).any():
        raise ExperimentError(
            f"the {run_type.value} predictions of {name} and {baseline} are not on the same rows with the same "
            f"labels, so McNemar's test cannot pair them; rerun both with --force."
        )
    return discordant_pairs(merged.label_model.tolist(), merged.predicted_label_model.tolist(),
                            merged.predicted_label_baseline.tolist())
