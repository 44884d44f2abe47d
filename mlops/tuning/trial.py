"""One trial of a study: the config with the sampled values, trained and scored on rows the hold-out never enters.

A trial trains on the estimate stage's train split (or, for ``tune --nested``, a backtesting fold's) and
is scored by macro-F1 on its validation split, or on ``inner_folds`` stratified folds of that train split
(leakage groups kept whole: duplicates, the group column and, where the experiment joins them, near-duplicates).
The global hold-out is never among those rows, nor a nested fold's test rows.
The same ``evaluate_trial`` runs in this process or in a Ray task.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.callbacks import LoopState, TrainingCallback
from mlops.core.config import ModelConfig
from mlops.core.errors import ExperimentError, ModelError
from mlops.core.metrics import compute_metrics
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig, resolve
from mlops.data.splitting import StratifiedGroupFolds, leakage_groups
from mlops.data.tables import LabelledData
from mlops.experiments.fold import fit_and_predict
from mlops.experiments.service import Experiment, comparable_texts, dataset_at, near_duplicate_pairs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares, as plain data (it travels to Ray workers): the base config, the seed,
    the labels and the (train rows, validation rows) pairs a trial is scored on."""

    config: dict[str, Any]
    name: str
    source: str
    allow_external: bool
    seed: int
    device: str | None
    labels: list[str]
    splits: list[tuple[np.ndarray, np.ndarray]]


def trial_splits(experiment: Experiment, data: LabelledData, inner_folds: int | None,
                 fold: int | None = None) -> list[tuple[np.ndarray, ...]]:
    """The (train, val) rows trials are scored on (original row ids): the estimate stage's, or with ``fold`` that
    backtesting fold's; or ``inner_folds`` stratified folds of that train split. Never a hold-out or test row."""
    source = experiment.plan.performance_estimation if fold is None else experiment.plan.backtesting[fold]
    where = "estimate" if fold is None else f"backtesting fold {fold + 1}"
    if not inner_folds:
        if not len(source.val):
            option = "--perf-estimation-val-size" if fold is None else "--backtesting-val-size"
            raise ExperimentError(f"experiment {experiment.experiment_id!r} has no {where} validation rows to score "
                                  f"trials on; pass --inner-folds K, or regenerate the splits with {option} above 0.")
        return [(np.asarray(source.train), np.asarray(source.val))]
    frame = data.frame.loc[source.train]
    params = experiment.info["split_parameters"]  # near-duplicates stay together as generate-splits kept them
    pairs = near_duplicate_pairs(comparable_texts(frame), params.get("near_duplicates", "off"),
                                 params.get("near_duplicate_threshold"))
    groups = leakage_groups(frame["text"].tolist(), frame["text_pair"].tolist() if "text_pair" in frame else None,
                            frame["group"].tolist() if "group" in frame else None,
                            linked_pairs=None if pairs is None else (pairs.first, pairs.second))
    rows = np.asarray(source.train)
    splitter = StratifiedGroupFolds(inner_folds, seed=experiment.seed)
    try:
        return [(rows[train], rows[val]) for train, val in splitter.split(rows, frame["label"].to_numpy(), groups)]
    except ValueError as exc:
        raise ExperimentError(f"cannot make {inner_folds} inner folds of the {len(rows)} {where} training rows: "
                              f"{exc}. Pass a smaller --inner-folds.") from None


def trial_config(spec: TrialSpec, values: dict[str, Any]) -> NamedConfig:
    """The base config with the trial's values in its training_arguments, validated like any config."""
    base = ModelConfig.model_validate(spec.config)
    config = base.model_copy(update={"training_arguments": {**base.training_arguments, **values}})
    return resolve(config, name=spec.name, source=f"{spec.source} with trial values {values}",
                   allow_external=spec.allow_external)


class PruningCallback(TrainingCallback):
    """Reports each epoch's validation macro-F1 to the Optuna trial and stops the fit when the pruner says so."""

    def __init__(self, trial) -> None:
        self.trial = trial

    def on_epoch_end(self, state: LoopState) -> None:
        score = state.history[-1].get(state.monitor) if state.monitor else None
        if score is None:
            return
        self.trial.report(float(score), state.epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {state.epoch} (validation macro-F1 {score:.4f})")


def _fit(named: NamedConfig, train, val, labels: list[str], context: FitContext):
    """fit_and_predict on (train, val), scored on val; a pruning decision comes out as optuna.TrialPruned."""
    import optuna

    try:
        return fit_and_predict(named, train, val, val, labels, context)
    except ModelError as exc:  # fit_and_predict reports model exceptions as ModelError; pruning is not one
        if isinstance(exc.__cause__, optuna.TrialPruned):
            raise exc.__cause__ from None
        raise


def evaluate_trial(spec: TrialSpec, values: dict[str, Any], data: LabelledData, trial=None) -> dict[str, Any]:
    """Train and score one trial; with ``trial`` (an Optuna trial) report progress to its pruner.

    One split: each epoch's validation macro-F1 is reported (encoders). Inner folds: the running mean after
    each fold is reported, with the fold number as the step.
    """
    named = trial_config(spec, values)
    scores: list[float] = []
    started = time.perf_counter()
    for k, (train_rows, val_rows) in enumerate(spec.splits):
        train, val = dataset_at(data, train_rows), dataset_at(data, val_rows)
        callbacks = [PruningCallback(trial)] if trial is not None and len(spec.splits) == 1 else []
        with tempfile.TemporaryDirectory(prefix="mlops-trial-") as work:
            context = FitContext(seed=spec.seed, work_dir=Path(work), device=spec.device, show_progress=False,
                                 callbacks=callbacks)
            outcome = _fit(named, train, val, spec.labels, context)
        scores.append(compute_metrics(val.labels, outcome.proba, spec.labels)["macro_f1"])
        if trial is not None and len(spec.splits) > 1:
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned(f"pruned after inner fold {k + 1} (mean macro-F1 {np.mean(scores):.4f})")
    return {"value": float(np.mean(scores)), "fold_scores": scores, "seconds": time.perf_counter() - started}
