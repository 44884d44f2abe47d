"""Runs of several configs, each fold trained by the chosen executor and written by the runner.

``local`` trains fold after fold in this process, as ``ExperimentRunner`` always has. ``ray`` first submits
every (config, fold) still missing as a Ray task, then lets the runner walk its folds as usual: where it would
train a fold it takes that task's result instead, and writes the fold folder, summary and run record itself,
atomically and in the same layout. Resume, ``compare-models`` and the report cannot tell who trained a fold;
a failed task fails the command with that fold's error, and the tasks still running are cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlops.errors import ConfigError, ExperimentError, ModelError
from mlops.experiment_service import RunType
from mlops.pipeline import FoldOutcome
from mlops.plugins import NamedConfig
from mlops.runner import ExperimentRunner, RunResult

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    ray_address: str | None = None
    shared_data: bool = False  # ray: workers read the input file by path (shared filesystem), sha256 checked

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}.")


class RemoteModel:
    """Stands in for a model trained in a task: the runner asks it only for its runtime facts."""

    def __init__(self, runtime: dict[str, Any]) -> None:
        self._runtime = runtime

    def runtime_info(self) -> dict[str, Any]:
        return self._runtime


class RemoteFolds:
    """The submitted tasks, by (config name, run type, fold); ``outcome(key)`` waits for one."""

    def __init__(self, sizes: dict[str, dict[str, float]] | None = None) -> None:
        self.refs: dict[tuple[str, str, int], Any] = {}
        self.sizes = dict(sizes or {})  # per config name: num_cpus and num_gpus of each of its tasks

    def device(self, named: NamedConfig, requested: str | None) -> str | None:
        """The device a task of ``named`` trains on: the one asked for, else CUDA when it gets a GPU, else CPU."""
        if requested or named.name not in self.sizes:
            return requested
        return "cuda" if self.sizes[named.name].get("num_gpus", 0) > 0 else "cpu"

    def arguments(self, named: NamedConfig):
        """The training arguments a task of ``named`` runs with (its threads pinned to the task's CPUs)."""
        from mlops.executors.tasks import pinned_arguments

        if named.name not in self.sizes:
            return named.arguments
        return pinned_arguments(named, self.sizes[named.name]["num_cpus"])

    def outcome(self, key: tuple[str, str, int]) -> FoldOutcome:
        import ray

        from mlops.executors.tasks import raise_error

        if key not in self.refs:
            raise ExperimentError(f"{key[0]} {key[1]} fold {key[2] + 1} was complete when the Ray tasks were submitted "
                                  "but is not now (its folder changed meanwhile); rerun the command.")
        try:
            record = ray.get(self.refs.pop(key))
        except ray.exceptions.RayError as exc:  # a worker died, was killed for memory, ...
            raise ModelError(f"the Ray task failed: {type(exc).__name__}: {exc}") from None
        if "error" in record:
            raise_error(record)
        return FoldOutcome(model=RemoteModel(record["runtime"]), proba=record["proba"], timings=record["timings"],
                           proba_uncalibrated=record["proba_uncalibrated"])

    def cancel(self) -> None:
        import ray

        for ref in self.refs.values():
            ray.cancel(ref)
        self.refs.clear()


def _run(runner: ExperimentRunner, experiment_id: str, named: NamedConfig, run_type: RunType, force: bool) -> RunResult:
    if run_type is RunType.backtesting:
        return runner.run_backtesting(experiment_id, named, force=force)
    return runner.estimate_performance(experiment_id, named, force=force)


def run_configs(runner: ExperimentRunner, experiment_id: str, configs: list[NamedConfig], run_type: RunType, *,
                force: bool, options: ExecutorOptions) -> list[RunResult]:
    """One run of each config (backtesting or the estimate), its folds trained by ``options.kind``."""
    names = [named.name for named in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--model-config-name names a config twice ({', '.join(names)}); name each once.")
    if options.kind == "local":
        return [_run(runner, experiment_id, named, run_type, force) for named in configs]
    from mlops.executors.cluster import RayCluster

    experiment = runner.service.load_experiment(experiment_id)
    if run_type is RunType.backtesting:  # before any task trains a fold with values that are not this experiment's
        for named in configs:
            named.check_fold_tuning(experiment.experiment_id, experiment.info, len(experiment.plan.backtesting),
                                        warn=False)
    with RayCluster(options.ray_address) as cluster:
        sizes = {named.name: cluster.resources(named.config, named.source) for named in configs}
        remote = RemoteFolds(sizes)
        runner.remote = remote  # from here on, fold identities carry the tasks' thread counts
        try:
            pending = {named.name: runner.pending_folds(experiment, named, run_type, force) for named in configs}
            if any(pending.values()):
                _submit(runner, cluster, experiment, configs, run_type, pending, options, remote, sizes)
            return [_run(runner, experiment_id, named, run_type, force) for named in configs]
        finally:
            runner.remote = None
            remote.cancel()


def _submit(runner: ExperimentRunner, cluster, experiment, configs: list[NamedConfig], run_type: RunType,
            pending: dict[str, list[int]], options: ExecutorOptions, remote: RemoteFolds,
            sizes: dict[str, dict[str, float]]) -> None:
    import ray

    from mlops.executors.tasks import run_fold_task

    if runner.callbacks or runner.tracking:
        logger.warning("--executor ray: per-epoch tracking callbacks run only in the driver, so tasks log just each "
                       "fold's result")
    runner.service.verify_input(experiment)
    box = cluster.ship_data(runner.service.load_data(experiment), experiment, options.shared_data)
    folds = runner.service.folds(experiment, run_type)
    task = ray.remote(run_fold_task)
    for named in configs:
        for k in pending[named.name]:
            fold = folds[k]
            trains = named.for_backtesting_fold(k) if run_type is RunType.backtesting else named
            spec = {"config": trains.config.model_dump(mode="json"), "name": named.name, "source": named.source,
                    "allow_external": True,  # the driver already checked the module (trusted, or allowed)
                    "seed": experiment.seed,
                    "device": runner.device, "labels": experiment.labels, "cpus": sizes[named.name]["num_cpus"],
                    "rows": {"train": fold.train, "val": fold.val, "test": fold.test}}
            remote.refs[(named.name, run_type.value, k)] = task.options(**sizes[named.name]).remote(spec, box)
    logger.info("submitted %d Ray task(s): %s", len(remote.refs),
                ", ".join(f"{name} x{len(ks)} ({sizes[name]['num_cpus']:g} CPU, {sizes[name]['num_gpus']:g} GPU)"
                          for name, ks in pending.items() if ks))
