"""The Optuna study of a tune: its storage (a SQLite file in the experiment folder, or any RDB URL), sampler,
pruner, and the check that a resumed study still describes the same experiment, config and search space."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from mlops.core.errors import ConfigError, ExperimentError
from mlops.core.io import pid_alive

logger = logging.getLogger(__name__)

PRUNERS = ("median", "halving", "none")
IDENTITY_ATTR = "mlops_identity"
#: The trial attribute naming the process that runs it (host and pid).
OWNER_ATTR = "mlops_owner"
#: Trial states that count toward --n-trials: a failed or interrupted trial is run again.
FINISHED_STATES = ("COMPLETE", "PRUNED")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def shown_url(url: str) -> str:
    """The storage URL with any password masked, for logs and output."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported when opened
        return url


def make_pruner(kind: str):
    """median: Optuna's MedianPruner; halving: SuccessiveHalvingPruner; none: never prune (defaults of each)."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner()
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {kind!r}; choose one of {', '.join(PRUNERS)}.")


def make_storage(url: str):
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/optuna raise many types for a bad URL
        raise ConfigError(f"cannot open the study storage {shown_url(url)}: {type(exc).__name__}: {exc}. Pass an "
                          "URL Optuna accepts to --storage (sqlite:///path.db, postgresql://...).") from None


def search_identity(experiment_info: dict[str, Any], config_dump: dict[str, Any], inner_folds: int | None,
                    fold: int | None = None) -> dict:
    """What a study's trials depend on: the data, the splits, the config (as ``config_json`` gives it, less its
    description) and how trials are scored: on the estimate's train split, or (``fold``) on that backtesting
    fold's. A study made for other values is refused rather than mixed."""
    config = {k: v for k, v in config_dump.items() if k not in ("description", "resources")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    identity = {"experiment_id": experiment_info["experiment_id"], "input_sha256": experiment_info["input_sha256"],
                "split_parameters": experiment_info["split_parameters"], "config_sha256": digest,
                "inner_folds": inner_folds or None}
    if fold is not None:  # absent for estimate studies, as before nested tuning existed
        identity["backtesting_fold"] = fold
    return identity


def open_study(study_name: str, url: str, *, seed: int, pruner: str, identity: dict[str, Any]):
    """Create the study, or load it (``load_if_exists``) after checking it was made for the same ``identity``.

    The TPE sampler is seeded with ``seed`` plus the number of trials already stored, so a resumed study
    does not re-draw the first run's random start-up points.
    """
    import optuna

    study = optuna.create_study(study_name=study_name, storage=make_storage(url), direction="maximize",
                                load_if_exists=True, pruner=make_pruner(pruner))
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
    elif stored != identity:
        changed = sorted(k for k in identity if stored.get(k) != identity[k])
        raise ExperimentError(
            f"study {study_name!r} in {shown_url(url)} was made with different settings ({', '.join(changed)} "
            "changed); mixing their trials would make the search meaningless. Pass another --study-name, or "
            "delete the study."
        )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ExperimentError(f"study {study_name!r} in {shown_url(url)} minimises; tune maximises macro-F1. "
                              "Pass another --study-name.")
    fail_abandoned_trials(study)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def claim(trial) -> None:
    """Record which process runs ``trial``, so a later run can tell a trial whose process died (kill -9, a lost
    machine) from one that is still running."""
    trial.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})


def fail_abandoned_trials(study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process on this machine is gone; return their numbers. Trials run
    elsewhere (another host of a cluster) or by a live process are left as they are."""
    import optuna

    abandoned = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR) or {}
        here = owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
        if here and not pid_alive(owner["pid"]):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            abandoned.append(trial.number)
    if abandoned:
        logger.warning("study %s: trial(s) %s were left RUNNING by a process that is gone (killed?); marked FAIL, "
                       "and as many new trials will run", study.study_name, ", ".join(map(str, abandoned)))
    return abandoned


def finished_trials(study) -> int:
    return sum(trial.state.name in FINISHED_STATES for trial in study.trials)


def trial_rows(study, decode) -> list[dict[str, Any]]:
    """One row per stored trial: number, state, value, params (decoded), duration and steps reported."""
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": decode(t.params),
             "duration_s": t.duration.total_seconds() if t.duration is not None else None,
             "steps": len(t.intermediate_values)} for t in study.trials]
