"""What runs inside a Ray task: plain inputs in, plain dicts out.

The model is built inside the task from its config (never pickled across), the data comes once per worker
process (from the object store, or from the shared input file after its sha256 is checked), torch threads
are pinned to the task's CPUs, and errors come back as data so the driver fails the command with that fold's
or trial's message.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, DataError, ExperimentError, MlopsError, ModelError
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig, resolve
from mlops.data.tables import LabelledData
from mlops.experiments.fold import fit_and_predict
from mlops.experiments.service import Experiment, ExperimentService, dataset_at

logger = logging.getLogger(__name__)

ERRORS = {cls.__name__: cls for cls in (ConfigError, DataError, ExperimentError, ModelError, MlopsError)}
#: The data of the last experiment this worker process was handed, by input sha256 (one entry at most).
_DATA: dict[str, LabelledData] = {}


def worker_data(box: dict[str, Any]) -> LabelledData:
    """The experiment's rows in this worker: fetched or read once per process, then reused by its tasks."""
    if box["sha256"] not in _DATA:
        _DATA.clear()
        if box["kind"] == "object":
            import ray

            _DATA[box["sha256"]] = LabelledData(frame=ray.get(box["ref"][0]))
        else:
            experiment = Experiment(box["experiment_id"], Path(box["directory"]), box["info"], plan=None)
            _DATA[box["sha256"]] = ExperimentService(Path(box["directory"]).parent).load_data(experiment)
    return _DATA[box["sha256"]]


def pinned_arguments(named: NamedConfig, cpus: float):
    """``named``'s training arguments with torch threads fixed to a task's CPUs, where the config leaves them to
    the model (whose default counts the whole machine's cores, not the task's share)."""
    if "num_threads" in type(named.arguments).model_fields and named.arguments.num_threads is None:
        return named.arguments.model_copy(update={"num_threads": max(1, int(cpus))})
    return named.arguments


def thread_pin(named: NamedConfig, cpus: float) -> dict[str, int]:
    """The training-argument update of ``pinned_arguments`` (empty if none); torch's own count too if loaded."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(cpus)))
    pinned = pinned_arguments(named, cpus)
    return {} if pinned is named.arguments else {"num_threads": pinned.num_threads}


def resolved_config(config: dict[str, Any], spec_name: str, source: str, allow_external: bool) -> NamedConfig:
    return resolve(ModelConfig.model_validate(config), name=spec_name, source=source, allow_external=allow_external)


def error_record(exc: BaseException) -> dict[str, Any]:
    kind = type(exc).__name__ if isinstance(exc, MlopsError) and type(exc).__name__ in ERRORS else "ModelError"
    message = str(exc) if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
    return {"error": {"type": kind, "message": message}}


def raise_error(record: dict[str, Any]) -> None:
    """Re-raise a task's error record in the driver as the domain error it was."""
    raise ERRORS.get(record["error"]["type"], ModelError)(record["error"]["message"])


def _node() -> dict[str, Any]:
    import ray

    context = ray.get_runtime_context()
    return {"kind": "ray", "node_id": context.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def run_fold_task(spec: dict[str, Any], box: dict[str, Any]) -> dict[str, Any]:
    """Train and apply one (model, fold): the test probabilities, timings and runtime facts, or an error."""
    try:
        named = resolved_config(spec["config"], spec["name"], spec["source"], spec["allow_external"])
        thread_pin(named, spec["cpus"])
        named = dataclasses.replace(named, arguments=pinned_arguments(named, spec["cpus"]))
        data = worker_data(box)
        train, val, test = (dataset_at(data, spec["rows"][part]) for part in ("train", "val", "test"))
        with tempfile.TemporaryDirectory(prefix="mlops-fold-") as work:
            context = FitContext(seed=spec["seed"], work_dir=Path(work), device=spec["device"], show_progress=False)
            outcome = fit_and_predict(named, train, val, test, spec["labels"], context)
        return {"proba": outcome.proba, "proba_uncalibrated": outcome.proba_uncalibrated,
                "val_proba": outcome.val_proba, "thresholds": outcome.thresholds,
                "timings": dict(outcome.timings), "runtime": {**outcome.model.runtime_info(), "executor": _node()}}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver as data
        return error_record(exc)
