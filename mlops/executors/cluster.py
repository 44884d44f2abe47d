"""The Ray side of ``--executor ray``: start or join a cluster, size each task, and ship the data once.

Without an address a local Ray instance sized to this machine is started and stopped afterwards; with
``--ray-address`` the tool joins that cluster (whose workers must have this project installed, in the same
version) and leaves it running. A Ray already initialised in this process (a test's, say) is used as it is.
Ray is imported only here, and only when asked for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mlops.core.config import ModelConfig, Resources
from mlops.core.errors import ConfigError
from mlops.core.runtime import openmp_settings

logger = logging.getLogger(__name__)

#: Per-task resources of each model family (by module) when its config has no ``resources``.
FAMILY_RESOURCES: dict[str, Resources] = {"models.tfidf_linear.model": Resources(cpus=1, gpus=0)}
#: Neural families: this many CPUs (at most a node's) and one GPU where the cluster has GPUs.
NEURAL_CPUS = 4


class RayCluster:
    """A context manager around ``ray.init``/``ray.shutdown``; ``resources(config)`` sizes a task."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False
        self._nodes: list[dict[str, float]] = []

    def __enter__(self) -> RayCluster:
        # Read when ray is imported: a `uv run` driver would otherwise have every worker rebuild the environment
        # with uv from the current folder. Workers use this interpreter, which has the project installed.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs the ray package; run `uv sync` (or pip install ray).") from None
        if not ray.is_initialized():
            try:
                # Workers on other machines get the OpenMP defaults the CLI sets here (mlops.core.runtime).
                env = {"env_vars": openmp_settings()}
                if self.address:
                    ray.init(address=self.address, logging_level=logging.WARNING, runtime_env=env)
                else:
                    # Ray sizes it to the machine (CPUs, GPUs, and a container's CPU quota).
                    ray.init(include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
            except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise ConfigError(f"cannot start or join {where}: {type(exc).__name__}: {exc}") from None
            self.started = True
        self._nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
        logger.info("Ray: %s, %d node(s), %s CPUs, %s GPUs", "local instance" if self.started and not self.address
                    else f"cluster {self.address or '(already initialised)'}", len(self._nodes),
                    self.total("CPU"), self.total("GPU"))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def total(self, resource: str) -> float:
        return sum(node.get(resource, 0.0) for node in self._nodes)

    def _largest(self, resource: str) -> float:
        return max((node.get(resource, 0.0) for node in self._nodes), default=0.0)

    def resources(self, config: ModelConfig, source: str) -> dict[str, float]:
        """``num_cpus``/``num_gpus`` of one task of ``config``; refused when no node could ever run it."""
        family = FAMILY_RESOURCES.get(config.module_path)
        default_gpus = 0.0 if family is not None or self.total("GPU") == 0 else 1.0
        default_cpus = 1.0 if family is not None else float(min(NEURAL_CPUS, max(1.0, self._largest("CPU"))))
        asked = config.resources or Resources()
        cpus = asked.cpus if asked.cpus is not None else (family.cpus if family else default_cpus)
        gpus = asked.gpus if asked.gpus is not None else (family.gpus if family else default_gpus)
        if not any(node.get("CPU", 0.0) >= cpus and node.get("GPU", 0.0) >= gpus for node in self._nodes):
            raise ConfigError(
                f"{source}: a task asks for {cpus:g} CPUs and {gpus:g} GPUs, but no node of the Ray cluster has that "
                f"much (largest: {self._largest('CPU'):g} CPUs, {self._largest('GPU'):g} GPUs); set "
                "\"resources\": {\"cpus\": ..., \"gpus\": ...} in the config to fit.")
        return {"num_cpus": cpus, "num_gpus": gpus}

    def slots(self, resources: dict[str, float]) -> int:
        """How many such tasks the cluster runs at once (at least 1)."""
        counts = []
        for node in self._nodes:
            fits = [node.get("CPU", 0.0) // resources["num_cpus"]] if resources["num_cpus"] else []
            if resources["num_gpus"]:
                fits.append(node.get("GPU", 0.0) // resources["num_gpus"])
            counts.append(min(fits) if fits else 1)
        return max(1, int(sum(counts)))

    @staticmethod
    def ship_data(data, experiment, shared_path: bool) -> dict[str, Any]:
        """How tasks get the experiment's rows: once through the object store, or by path on a shared
        filesystem (each worker checks the file's sha256 before reading it)."""
        info = experiment.info
        if shared_path:
            return {"kind": "path", "sha256": info["input_sha256"], "experiment_id": experiment.experiment_id,
                    "directory": str(experiment.directory), "info": info}
        import ray

        columns = [c for c in ("text", "label", "text_pair") if c in data.frame]
        # In a list, so Ray hands the task the reference and each worker process fetches it once (tasks.py).
        return {"kind": "object", "sha256": info["input_sha256"], "ref": [ray.put(data.frame[columns])]}
