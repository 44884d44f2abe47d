"""``cli tune``: an Optuna study over a config's ``search_space``, resumable, and the best config written out.

The study lives in ``<experiment>/tuning/<study>.db`` (SQLite) or any ``--storage`` URL; it is created or
loaded (``load_if_exists``), so an interrupted tune resumes and runs only the trials still missing up to
``--n-trials`` (complete and pruned trials count; failed ones are run again). The best trial's values are
written as ``<experiment>/tuned/<config>_tuned.json``, which ``--model-config-name <config>_tuned`` names
within the experiment.

Trials train on the estimate's train split, which never holds a hold-out row but, in cv, does hold every
backtesting fold's test rows: a backtest of that config on the same experiment is optimistic, and is flagged so.
``--nested`` also runs one study per backtesting fold on that fold's own train split; the tuned config then carries
each fold's best values (``fold_training_arguments``), which its backtest uses, so that backtest scores the whole
tune-then-train procedure on rows no trial saw (nested cross-validation).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops.core.config import ModelConfig, TuningRecord, config_json
from mlops.core.errors import ConfigError
from mlops.core.io import check_plain_name, read_json, write_json
from mlops.core.plugins import NamedConfig, resolve
from mlops.core.search_space import decode, example_search_space, suggest
from mlops.experiments.service import Experiment, ExperimentService
from mlops.tuning.study import (FINISHED_STATES, claim, finished_trials, open_study, search_identity, shown_url,
                                sqlite_url, trial_rows)
from mlops.tuning.trial import TrialSpec, evaluate_trial, trial_splits

logger = logging.getLogger(__name__)

TUNED_SUFFIX = "_tuned"


@dataclass
class TuneOptions:
    n_trials: int = 20
    timeout: float | None = None
    study_name: str | None = None
    storage: str | None = None
    inner_folds: int | None = None
    pruner: str = "median"
    executor: str = "local"
    ray_address: str | None = None
    ray_shared_data: bool = False
    nested: bool = False  # also one study per backtesting fold, for an honest backtest of the tuned config


@dataclass
class TuneResult:
    experiment_id: str
    config_name: str
    study_name: str
    storage: str
    n_trials: int
    trials_run_now: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    best_config_path: Path | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    folds: list[dict[str, Any]] = field(default_factory=list)  # --nested: one study per backtesting fold
    nested: bool = False  # the tuned config carries per-fold values (every fold study has a complete trial)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best_config_path": None if self.best_config_path is None
                else str(self.best_config_path)}


class TuningService:
    def __init__(self, service: ExperimentService, *, device: str | None = None, allow_external: bool = False) -> None:
        self.service = service
        self.device = device
        self.allow_external = allow_external

    def tune(self, experiment_id: str, named: NamedConfig, options: TuneOptions) -> TuneResult:
        experiment = self.service.load_experiment(experiment_id)
        if not named.config.search_space:
            raise ConfigError(f"{named.source} has no search_space to tune; add one over the model's training "
                              f"arguments, e.g. {example_search_space(named.arguments)}.")
        if options.n_trials < 1:
            raise ConfigError(f"--n-trials must be at least 1, found {options.n_trials}.")
        study_name = check_plain_name(options.study_name or named.name, "--study-name")
        if options.storage:
            url = options.storage
        else:
            self.service.tuning_dir(experiment_id).mkdir(parents=True, exist_ok=True)
            url = sqlite_url(self.service.tuning_dir(experiment_id) / f"{study_name}.db")
        quiet_optuna()
        data = functools.cache(lambda: self.service.load_data(experiment))  # read once, and only if a trial runs
        with self._cluster(options):
            study, run_now = self._run_study(experiment, named, options, study_name, url, data, fold=None)
            fold_studies = []
            for k in range(len(experiment.plan.backtesting)) if options.nested else ():
                fold_study, fold_run = self._run_study(experiment, named, options, f"{study_name}_fold{k}", url,
                                                       data, fold=k)
                fold_studies.append((k, fold_study, fold_run))
        return self._result(experiment, named, study, study_name, url, options, run_now, fold_studies)

    @staticmethod
    def _cluster(options: TuneOptions):
        """One Ray instance (or connection) for all of a tune's studies; nothing for the local executor."""
        if options.executor != "ray":
            return contextlib.nullcontext()
        from mlops.executors.cluster import RayCluster

        return RayCluster(options.ray_address)

    def _run_study(self, experiment: Experiment, named: NamedConfig, options: TuneOptions, study_name: str, url: str,
                   data, fold: int | None):
        """Open (or resume) one study and run its missing trials: on the estimate's rows, or on backtesting
        ``fold``'s (never that fold's test rows). Returns the study and how many trials ran now."""
        identity = search_identity(experiment.info, config_json(named.config), options.inner_folds, fold)
        study = open_study(study_name, url, seed=experiment.seed, pruner=options.pruner, identity=identity)
        before = len(study.trials)
        remaining = options.n_trials - finished_trials(study)
        rows = "the estimate's train split" if fold is None else f"backtesting fold {fold + 1}'s train split"
        if remaining <= 0:
            logger.info("study %s already has %d finished trials (--n-trials %d); none to run", study_name,
                        finished_trials(study), options.n_trials)
            return study, 0
        logger.info("study %s (%s): running %d of %d trials on %s (%d already finished)", study_name, shown_url(url),
                    remaining, options.n_trials, rows, finished_trials(study))
        spec = TrialSpec(config=named.config.model_dump(mode="json"), name=named.name, source=named.source,
                         allow_external=self.allow_external, seed=experiment.seed, device=self.device,
                         labels=experiment.labels, splits=trial_splits(experiment, data(), options.inner_folds, fold))
        if options.executor == "ray":
            from mlops.tuning.parallel import optimize_on_ray

            optimize_on_ray(study, spec, data(), experiment, remaining=remaining, options=options, url=url)
        else:
            self._optimize_here(study, spec, named.config.search_space, data(), remaining, options)
        return study, len(study.trials) - before

    @staticmethod
    def _optimize_here(study, spec: TrialSpec, space, data, remaining: int, options: TuneOptions) -> None:
        """Trials one after another in this process (Optuna's ``study.optimize``); an error fails the command."""
        import optuna

        def objective(trial) -> float:
            claim(trial)
            values = suggest(trial, space)
            logger.info("trial %d: %s", trial.number, values)
            result = evaluate_trial(spec, values, data, trial)
            trial.set_user_attr("fold_scores", result["fold_scores"])
            logger.info("trial %d: validation macro-F1 %.4f in %.1f s", trial.number, result["value"],
                        result["seconds"])
            return result["value"]

        states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED_STATES)
        study.optimize(objective, n_trials=remaining, timeout=options.timeout, catch=(),
                       callbacks=[optuna.study.MaxTrialsCallback(options.n_trials, states=states)])

    def _result(self, experiment: Experiment, named: NamedConfig, study, study_name: str, url: str,
                options: TuneOptions, run_now: int, fold_studies: list[tuple[int, Any, int]]) -> TuneResult:
        space = named.config.search_space
        rows = trial_rows(study, lambda params: decode(space, params))
        result = TuneResult(experiment.experiment_id, named.name, study_name, shown_url(url), options.n_trials,
                            run_now, None, None, None, None, rows)
        per_fold: dict[int, dict[str, Any]] = {}
        for k, fold_study, fold_run in fold_studies:
            best = _best(fold_study)
            result.folds.append({"fold": k, "study_name": fold_study.study_name, "trials_run_now": fold_run,
                                 "trials_finished": finished_trials(fold_study),
                                 "best_trial": None if best is None else best.number,
                                 "best_value": None if best is None else best.value,
                                 "best_params": None if best is None else decode(space, best.params)})
            if best is not None:
                per_fold[k] = decode(space, best.params)
        best = _best(study)
        if best is None:
            logger.warning("no trial of study %s has completed; no tuned config written", study_name)
            return result
        if fold_studies and len(per_fold) < len(fold_studies):
            logger.warning("some fold studies have no completed trial, so the tuned config gets no per-fold values "
                           "and its backtest stays optimistic; rerun with more --n-trials")
            per_fold = {}
        result.best_trial, result.best_value = best.number, best.value
        result.best_params = decode(space, best.params)
        result.nested = bool(per_fold)
        result.best_config_path = self._write_tuned(experiment, named, study_name, url, best, result.best_params,
                                                    per_fold)
        return result

    def _write_tuned(self, experiment: Experiment, named: NamedConfig, study_name: str, url: str, best,
                     params: dict, per_fold: dict[int, dict[str, Any]]) -> Path:
        """The best trial's config (and with --nested each fold's best values), written atomically; unchanged
        while the best trials are (so its runs resume)."""
        base = named.config
        description = (f"{base.description + ' ' if base.description else ''}[tuned by study '{study_name}' "
                       f"({shown_url(url)}): trial {best.number}, validation macro-F1 "
                       f"{best.value:.4f}, experiment {experiment.experiment_id}]")
        tuning = TuningRecord(study=study_name, storage=shown_url(url), experiment_id=experiment.experiment_id,
                              input_sha256=experiment.info["input_sha256"],
                              split_parameters=experiment.info["split_parameters"], nested=bool(per_fold),
                              best_trial=best.number, best_value=best.value)
        config = base.model_copy(update={"training_arguments": {**base.training_arguments, **params},
                                         "fold_training_arguments": per_fold or None, "tuning": tuning,
                                         "search_space": None, "description": description})
        name = f"{named.name}{TUNED_SUFFIX}"
        resolve(config, name=name, source=f"the tuned {name}", allow_external=self.allow_external)  # loads as written
        path = self.service.tuned_dir(experiment.experiment_id) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if not per_fold and ModelConfig.model_validate(read_json(path)).fold_training_arguments:
                logger.warning("%s had per-fold values from `tune --nested`; this tune without --nested replaces "
                               "them, so the tuned config's backtest will be flagged optimistic again", path)
            logger.info("replacing %s with the study's current best", path)
        write_json(path, config_json(config, {"search_space"}))
        return path


def _best(study):
    """The study's best complete trial, or None."""
    return study.best_trial if any(t.state.name == "COMPLETE" for t in study.trials) else None


def quiet_optuna() -> None:
    """Optuna's own per-trial INFO lines repeat ours; keep its warnings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

