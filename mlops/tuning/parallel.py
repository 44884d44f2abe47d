"""``tune --executor ray``: trials in parallel, asked of the study in the driver and evaluated in Ray tasks.

The driver keeps as many trials running as the cluster has room for (``study.ask``), each in a task that
reports its per-epoch scores to the study's storage, so the pruner compares it with every other trial; the
driver ``tell``s each result as it comes back. The storage must be reachable from every worker: the default
SQLite file is, on one machine (or a shared filesystem); a multi-node cluster wants ``--storage
postgresql://...``. A failed trial fails the command with its error, after the running ones are cancelled.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from mlops.core.config import ModelConfig
from mlops.core.search_space import suggest
from mlops.executors.tasks import error_record, resolved_config, thread_pin, worker_data
from mlops.tuning.study import claim, make_pruner, make_storage
from mlops.tuning.trial import evaluate_trial

logger = logging.getLogger(__name__)


def optimize_on_ray(study, spec, data, experiment, *, remaining: int, options, url: str) -> None:
    """Run ``remaining`` trials of ``study`` (fewer if ``options.timeout`` passes first) as Ray tasks."""
    from mlops.executors.cluster import RayCluster

    config = ModelConfig.model_validate(spec.config)
    with RayCluster(options.ray_address) as cluster:  # before ray is imported: it sets how Ray starts
        import ray

        size = cluster.resources(config, spec.source)
        parallel = min(remaining, cluster.slots(size))
        logger.info("running up to %d trials at once (%g CPU, %g GPU each)", parallel, size["num_cpus"],
                    size["num_gpus"])
        box = cluster.ship_data(data, experiment, options.ray_shared_data)
        task = ray.remote(run_trial_task).options(**size)
        running: dict[Any, Any] = {}
        asked, started = 0, time.monotonic()
        try:
            while True:
                while (asked < remaining and len(running) < parallel
                       and not (options.timeout and time.monotonic() - started > options.timeout)):
                    trial = study.ask()
                    values = suggest(trial, config.search_space)
                    logger.info("trial %d: %s", trial.number, values)
                    link = {"study_name": study.study_name, "storage": url, "pruner": options.pruner,
                            "trial_id": trial._trial_id, "cpus": size["num_cpus"]}  # the worker reopens this trial
                    running[task.remote(spec, values, box, link)] = trial
                    asked += 1
                if not running:
                    return
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    _tell(study, running.pop(ref), ref)
        except BaseException:
            _abandon(study, running)
            raise


def _tell(study, trial, ref) -> None:
    import optuna
    import ray

    from mlops.executors.tasks import raise_error

    try:
        record = ray.get(ref)
    except ray.exceptions.RayError as exc:
        record = {"error": {"type": "ModelError", "message": f"the Ray task failed: {type(exc).__name__}: {exc}"}}
    if "error" in record:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise_error({"error": {**record["error"], "message": f"trial {trial.number} failed: "
                                                             f"{record['error']['message']}"}})
    if record.get("pruned"):
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        logger.info("trial %d: %s", trial.number, record["message"])
        return
    trial.set_user_attr("fold_scores", record["fold_scores"])
    study.tell(trial, record["value"])
    logger.info("trial %d: validation macro-F1 %.4f in %.1f s", trial.number, record["value"], record["seconds"])


def _abandon(study, running: dict) -> None:
    """Cancel the running tasks and mark their trials failed (a rerun runs them again)."""
    import optuna
    import ray

    for ref, trial in running.items():
        ray.cancel(ref)
        try:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - best effort while another error is on its way out
            logger.debug("could not mark trial %d failed", trial.number, exc_info=True)
    running.clear()


def run_trial_task(spec, values: dict[str, Any], box: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one Optuna trial; it reports to the shared study storage, so the pruner sees every trial."""
    import optuna

    try:
        pin = thread_pin(resolved_config(spec.config, spec.name, spec.source, spec.allow_external), link["cpus"])
        if pin and "num_threads" not in values:
            spec = dataclasses.replace(spec, config={**spec.config, "training_arguments": {
                **spec.config.get("training_arguments", {}), **pin}})
        study = optuna.load_study(study_name=link["study_name"], storage=make_storage(link["storage"]),
                                  pruner=make_pruner(link["pruner"]))
        trial = optuna.trial.Trial(study, link["trial_id"])
        claim(trial)
        return evaluate_trial(spec, values, worker_data(box), trial)
    except optuna.TrialPruned as exc:
        return {"pruned": True, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver as data
        return error_record(exc)

