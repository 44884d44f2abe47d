"""The Ray executor: every (config, fold) still missing is submitted as a Ray task before the runner walks the
folds; where the runner would train a fold it takes that task's result instead, and writes the fold folder,
summary and run record itself, atomically and in the same layout. Resume, ``compare-models`` and the report
cannot tell who trained a fold; a failed task fails the command with that fold's error, and the tasks still
running are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlops.core.errors import ExperimentError, ModelError
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.core.text_dataset import TextDataset
from mlops.executors.local import LocalExecutor
from mlops.executors.options import ExecutorOptions
from mlops.experiments.fold import FoldOutcome
from mlops.experiments.service import RunType

logger = logging.getLogger(__name__)


class RemoteModel:
    """Stands in for a model trained in a task: the runner asks it only for its runtime facts."""

    def __init__(self, runtime: dict[str, Any]) -> None:
        self._runtime = runtime

    def runtime_info(self) -> dict[str, Any]:
        return self._runtime


class RayExecutor(LocalExecutor):
    """Ray tasks, by (config name, run type, fold); ``fit`` waits for the task of its key."""

    kind = "ray"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.refs: dict[tuple[str, str, int], Any] = {}
        self.sizes: dict[str, dict[str, float]] = {}  # per config name: num_cpus and num_gpus of each of its tasks
        self.cluster = None

    @contextmanager
    def open(self, configs: Sequence[NamedConfig]) -> Iterator[RayExecutor]:
        from mlops.executors.cluster import RayCluster

        with RayCluster(self.options.ray_address) as cluster:
            self.cluster = cluster
            self.sizes = {named.name: cluster.resources(named.config, named.source) for named in configs}
            try:
                yield self
            finally:
                self.cancel()
                self.cluster, self.sizes = None, {}

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

    def arithmetic(self, named: NamedConfig, device: str | None) -> dict[str, Any]:
        return named.model_class.arithmetic(self.arguments(named), self.device(named, device))

    def fit(self, named: NamedConfig, key: tuple[str, str, int] | None, train: TextDataset, val: TextDataset,
            test: TextDataset, labels: Sequence[str], context: FitContext, scratch_parent: Path) -> FoldOutcome:
        if key is None:  # not a fold of a submitted run (the final model): train here
            return super().fit(named, key, train, val, test, labels, context, scratch_parent)
        return self.outcome(key)
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
                           proba_uncalibrated=record["proba_uncalibrated"], thresholds=record["thresholds"],
                           val_proba=record["val_proba"])

    def submit(self, service, experiment, configs: Sequence[NamedConfig], run_type: RunType,
               pending: dict[str, list[int]], device: str | None) -> None:
        import ray

        from mlops.executors.tasks import run_fold_task

        service.verify_input(experiment)
        box = self.cluster.ship_data(service.load_data(experiment), experiment, self.options.shared_data)
        folds = service.folds(experiment, run_type)
        task = ray.remote(run_fold_task)
        for named in configs:
            size = self.sizes[named.name]
            for k in pending[named.name]:
                fold = folds[k]
                trains = named.for_backtesting_fold(k) if run_type is RunType.backtesting else named
                spec = {"config": trains.config.model_dump(mode="json"), "name": named.name, "source": named.source,
                        "allow_external": True,  # the driver already checked the module (trusted, or allowed)
                        "seed": experiment.seed, "device": device, "labels": experiment.labels,
                        "cpus": size["num_cpus"], "rows": {"train": fold.train, "val": fold.val, "test": fold.test}}
                self.refs[(named.name, run_type.value, k)] = task.options(**size).remote(spec, box)
        logger.info("submitted %d Ray task(s): %s", len(self.refs),
                    ", ".join(f"{name} x{len(ks)} ({self.sizes[name]['num_cpus']:g} CPU, "
                              f"{self.sizes[name]['num_gpus']:g} GPU)" for name, ks in pending.items() if ks))

    def cancel(self) -> None:
        import ray

        for ref in self.refs.values():
            ray.cancel(ref)
        self.refs.clear()
