"""What a report shows, read from an experiment folder: the data, each model's runs, predictions and manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.errors import ExperimentError
from mlops.core.io import read_json
from mlops.core.metrics import PREDICTED_COLUMN, proba_column
from mlops.core.model_folder import read_descriptor, read_manifest
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, Experiment,
                                       ExperimentService, RunType)

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Row-level outcome of a run: true and predicted class indices, and the probabilities (n, k)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None


@dataclass
class RunView:
    """One run type of one model: its fold records (metrics.json) and pooled predictions."""

    folds: list[dict[str, Any]]
    predictions: Predictions | None
    #: Multi-label runs: the pooled (rows, labels) 0/1 matrices of true and predicted label sets.
    label_sets: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def histories(self) -> list[list[dict[str, Any]]]:
        return [fold.get("runtime", {}).get("history") or [] for fold in self.folds]


@dataclass
class ModelView:
    name: str
    backtesting: RunView | None = None
    holdout: RunView | None = None
    final_manifest: dict[str, Any] | None = None
    final_descriptor: dict[str, Any] | None = None
    final_dir: Path | None = None


@dataclass
class AuditView:
    """What ``cli audit`` wrote: its summary and the head of its tables."""

    summary: dict[str, Any]
    label_issues: Any  # pandas DataFrame, top rows
    pairs: Any  # pandas DataFrame, pairs across splits first
    current: bool  # made on the experiment's current data and splits


@dataclass
class ExperimentView:
    experiment: Experiment
    models: list[ModelView] = field(default_factory=list)
    audit: AuditView | None = None
    #: summary.json of each cli learning-curve / active-learning-sim run, by config name
    learning_curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    simulations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return self.experiment.labels


def _read_predictions(path: Path, labels: list[str]) -> Predictions | None:
    import pandas as pd

    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"label": str, PREDICTED_COLUMN: str}, keep_default_na=False)
    index = {label: i for i, label in enumerate(labels)}
    columns = [proba_column(label) for label in labels]
    proba = frame[columns].to_numpy(dtype=np.float64) if all(c in frame for c in columns) else None
    return Predictions(y_true=frame["label"].map(index).to_numpy(dtype=np.int64),
                       y_pred=frame[PREDICTED_COLUMN].map(index).to_numpy(dtype=np.int64), proba=proba)


def _pooled(parts: list[Predictions | None]) -> Predictions | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    probas = [p.proba for p in parts]
    return Predictions(y_true=np.concatenate([p.y_true for p in parts]),
                       y_pred=np.concatenate([p.y_pred for p in parts]),
                       proba=None if any(p is None for p in probas) else np.concatenate(probas))


def _run_view(experiment: Experiment, run_dir: Path, fold_dirs: list[Path]) -> RunView | None:
    done = [d for d in fold_dirs if (d / METRICS_FILE).is_file()]
    if not done:
        return None
    if stale := [d for d in done if not experiment.made_on_current_splits(read_json(d / METRICS_FILE))]:
        logger.warning("%s: left out of the report, %d of its folds were made on other data or splits than the "
                       "experiment's current ones (rerun it with --force)", run_dir, len(stale))
        return None
    labels = experiment.labels
    folds = [read_json(d / METRICS_FILE) for d in done]
    if experiment.task.multi_label:
        return RunView(folds=folds, predictions=None,
                       label_sets=_pooled_label_sets([d / PREDICTIONS_FILE for d in done], labels,
                                                     experiment.task.separator))
    return RunView(folds=folds, predictions=_pooled([_read_predictions(d / PREDICTIONS_FILE, labels) for d in done]))


def _pooled_label_sets(paths: list[Path], labels: list[str], separator: str) -> tuple[np.ndarray, np.ndarray] | None:
    import pandas as pd

    from mlops.core.multilabel import PREDICTED_LABELS_COLUMN, label_matrix

    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths if p.is_file()]
    if not frames:
        return None
    frame = pd.concat(frames)

    def matrix(column: str) -> np.ndarray:
        return label_matrix([[x for x in cell.split(separator) if x] for cell in frame[column]], labels)

    return matrix("label"), matrix(PREDICTED_LABELS_COLUMN)


def collect(service: ExperimentService, experiment_id: str) -> ExperimentView:
    """Everything the report shows for ``experiment_id``; models without any finished run are left out."""
    experiment = service.load_experiment(experiment_id)
    view = ExperimentView(experiment)
    runs = experiment.directory / "runs"
    names = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    n_folds = len(experiment.plan.backtesting)
    for name in names:
        model = ModelView(name)
        backtesting = service.run_dir(experiment_id, name, RunType.backtesting)
        model.backtesting = _run_view(experiment, backtesting, [backtesting / f"fold_{k}" for k in range(n_folds)])
        estimate = service.run_dir(experiment_id, name, RunType.performance_estimation)
        model.holdout = _run_view(experiment, estimate, [estimate])
        for run_type in (RunType.backtesting, RunType.performance_estimation):
            if (changed := service.changed_config(experiment_id, name, run_type)) is not None:
                logger.warning("%s %s: left out of the report, %s (rerun it with --force)", name, run_type.value,
                               changed)
                setattr(model, "backtesting" if run_type is RunType.backtesting else "holdout", None)
        model.final_dir = service.final_model_dir(experiment_id, name)
        if model.final_dir is not None:
            model.final_descriptor = read_descriptor(model.final_dir)[0]
            model.final_manifest = read_manifest(model.final_dir) or model.final_manifest
        if model.backtesting or model.holdout or model.final_dir:
            view.models.append(model)
    view.audit = _audit_view(service, experiment)
    for attribute, folder in (("learning_curves", "learning_curve"), ("simulations", "active_learning")):
        root = experiment.directory / folder
        for path in sorted(root.glob("*/summary.json")) if root.is_dir() else []:
            getattr(view, attribute)[path.parent.name] = read_json(path)
    if not view.models:
        raise ExperimentError(f"experiment {experiment_id!r} has no finished runs to report on; run "
                              "`cli run-backtesting` (and `cli estimate-performance`) first.")
    return view


def _audit_view(service: ExperimentService, experiment: Experiment, rows: int = 10) -> AuditView | None:
    import pandas as pd

    folder = service.audit_dir(experiment.experiment_id)
    if not (folder / "audit.json").is_file():
        return None
    summary = read_json(folder / "audit.json")
    current = summary.get("identity") == {key: experiment.info.get(key) for key in ("input_sha256", "split_parameters")}
    issues = pd.read_csv(folder / "label_issues.csv", nrows=rows) if (folder / "label_issues.csv").is_file() else None
    pairs = pd.read_csv(folder / "near_duplicates.csv", nrows=rows) if (folder / "near_duplicates.csv").is_file() else None
    return AuditView(summary, issues, pairs, current)


def confusion(predictions: Predictions, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (predictions.y_true, predictions.y_pred), 1)
    return matrix


def per_class(matrix: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = truth)."""
    rows = []
    for i, label in enumerate(labels):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": label, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(support)})
    return rows


def reliability(predictions: Predictions, n_bins: int = 15) -> dict[str, Any] | None:
    """Confidence bins of the top class: mean confidence, accuracy and count per bin, and the ECE."""
    if predictions.proba is None or not len(predictions.y_true):
        return None
    confidence = predictions.proba.max(axis=1)
    correct = predictions.proba.argmax(axis=1) == predictions.y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            accuracy, mean_confidence = float(correct[inside].mean()), float(confidence[inside].mean())
            ece += inside.mean() * abs(accuracy - mean_confidence)
            bins.append({"low": edges[b], "high": edges[b + 1], "confidence": mean_confidence,
                         "accuracy": accuracy, "count": int(inside.sum())})
    return {"bins": bins, "ece": float(ece), "n": int(len(confidence))}
