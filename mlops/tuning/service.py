"""``cli tune``: an Optuna study over a config's ``search_space``, resumable, and the best config written out.

The study lives in ``<experiment>/tuning/<study>.db`` (SQLite) or any ``--storage`` URL; it is created or
loaded (``load_if_exists``), so an interrupted tune resumes and runs only the trials still missing up to
``--n-trials`` (complete and pruned trials count; failed ones are run again). The best trial's values are
written as ``<experiment>/tuned/<config>_tuned.json``, which ``--model-config-name <config>_tuned`` names
within the experiment.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops.errors import ConfigError
from mlops.experiment_service import ExperimentService
from mlops.io import check_plain_name, write_json
from mlops.plugins import NamedConfig, resolve
from mlops.search_space import decode, suggest
from mlops.tuning.study import (FINISHED_STATES, finished_trials, open_study, search_identity, shown_url,
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
        space = named.config.search_space
        if not space:
            raise ConfigError(
                f"{named.source} has no search_space to tune; add one, e.g. \"search_space\": {{\"learning_rate\": "
                "{\"type\": \"loguniform\", \"low\": 1e-5, \"high\": 1e-4}}.")
        if options.n_trials < 1:
            raise ConfigError(f"--n-trials must be at least 1, found {options.n_trials}.")
        study_name = check_plain_name(options.study_name or named.name, "--study-name")
        if options.storage:
            url = options.storage
        else:
            self.service.tuning_dir(experiment_id).mkdir(parents=True, exist_ok=True)
            url = sqlite_url(self.service.tuning_dir(experiment_id) / f"{study_name}.db")
        identity = search_identity(experiment.info, named.config.model_dump(mode="json"), options.inner_folds)
        quiet_optuna()
        study = open_study(study_name, url, seed=experiment.seed, pruner=options.pruner, identity=identity)
        before = len(study.trials)
        remaining = options.n_trials - finished_trials(study)
        if remaining <= 0:
            logger.info("study %s already has %d finished trials (--n-trials %d); none to run", study_name,
                        finished_trials(study), options.n_trials)
        else:
            logger.info("study %s (%s): running %d of %d trials (%d already finished)", study_name, shown_url(url),
                        remaining, options.n_trials, finished_trials(study))
            data = self.service.load_data(experiment)
            spec = TrialSpec(config=named.config.model_dump(mode="json"), name=named.name, source=named.source,
                             allow_external=self.allow_external, seed=experiment.seed,
                             device=self.device, labels=experiment.labels,
                             splits=trial_splits(experiment, data, options.inner_folds))
            if options.executor == "ray":
                from mlops.executors.trials import optimize_on_ray

                optimize_on_ray(study, spec, data, experiment, remaining=remaining, options=options, url=url)
            else:
                self._optimize_here(study, spec, space, data, remaining, options)
        return self._result(experiment_id, named, study, study_name, url, options, len(study.trials) - before)

    @staticmethod
    def _optimize_here(study, spec: TrialSpec, space, data, remaining: int, options: TuneOptions) -> None:
        """Trials one after another in this process (Optuna's ``study.optimize``); an error fails the command."""
        import optuna

        def objective(trial) -> float:
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

    def _result(self, experiment_id: str, named: NamedConfig, study, study_name: str, url: str,
                options: TuneOptions, run_now: int) -> TuneResult:
        space = named.config.search_space
        rows = trial_rows(study, lambda params: decode(space, params))
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        result = TuneResult(experiment_id, named.name, study_name, shown_url(url), options.n_trials, run_now,
                            None, None, None, None, rows)
        if not complete:
            logger.warning("no trial of study %s has completed; no tuned config written", study_name)
            return result
        best = study.best_trial
        result.best_trial, result.best_value = best.number, best.value
        result.best_params = decode(space, best.params)
        result.best_config_path = self._write_tuned(experiment_id, named, study_name, url, best, result.best_params)
        return result

    def _write_tuned(self, experiment_id: str, named: NamedConfig, study_name: str, url: str, best,
                     params: dict) -> Path:
        """The best trial's config, written atomically; unchanged while the best trial is (so its runs resume)."""
        base = named.config
        description = (f"{base.description + ' ' if base.description else ''}[tuned by study '{study_name}' "
                       f"({shown_url(url)}): trial {best.number}, validation macro-F1 "
                       f"{best.value:.4f}, experiment {experiment_id}]")
        config = base.model_copy(update={"training_arguments": {**base.training_arguments, **params},
                                         "search_space": None, "description": description})
        name = f"{named.name}{TUNED_SUFFIX}"
        resolve(config, name=name, source=f"the tuned {name}", allow_external=self.allow_external)  # loads as written
        path = self.service.tuned_dir(experiment_id) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            logger.info("replacing %s with the study's current best", path)
        write_json(path, config.model_dump(mode="json", exclude={"search_space"}))
        return path


def quiet_optuna() -> None:
    """Optuna's own per-trial INFO lines repeat ours; keep its warnings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

