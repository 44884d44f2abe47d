"""Members' stored runs, reused: an ensemble's fold combines what its members' own runs of that fold predicted.

A member's run of the same experiment, run type and fold qualifies when its recorded identity matches what the
member would be trained with now (data, splits, seed, config) and its folder holds the predictions of the fold's
val and test rows. The val-row probabilities fit the ensemble's weights, the test-row ones are combined and
scored, exactly as if the members had been trained again on the same rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.config import config_fingerprint
from mlops.core.io import read_json
from mlops.core.metrics import proba_column
from mlops.core.model_interface import CombinesMembers, check_probabilities
from mlops.core.plugins import NamedConfig
from mlops.core.text_dataset import TextDataset
from mlops.data.splitting import Fold
from mlops.experiments.fold import FoldOutcome
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, Experiment,
                                       ExperimentService, RunType)

logger = logging.getLogger(__name__)


def base_identity(experiment: Experiment, named: NamedConfig, run_type: RunType, fold: int) -> dict[str, Any]:
    """What a fold's stored result must match to stand for ``named`` on this fold, device and threads aside."""
    identity = {
        "experiment_id": experiment.experiment_id,
        "input_sha256": experiment.info["input_sha256"],
        "split_parameters": experiment.info["split_parameters"],
        "config_name": named.name,
        "config_sha256": config_fingerprint(named.config, run_type),
        "run_type": run_type.value,
        "fold": fold,
        "seed": experiment.seed,
    }
    parts = named.model_class.parts_fingerprint(named.arguments)  # an ensemble's members' configs
    if parts:
        identity["parts_sha256"] = parts
    return identity


def fold_dir_of(service: ExperimentService, experiment: Experiment, name: str, run_type: RunType, k: int) -> Path:
    run_dir = service.run_dir(experiment.experiment_id, name, run_type)
    return run_dir / f"fold_{k}" if run_type is RunType.backtesting else run_dir


def _stored_proba(path: Path, rows: np.ndarray, labels: list[str]) -> np.ndarray | str:
    """The probability columns of a stored predictions file, or why they cannot stand for ``rows``."""
    import pandas as pd

    if not path.is_file():
        return f"no {path.name} (a run from before val predictions were kept: rerun it with --force)"
    frame = pd.read_csv(path, usecols=lambda c: c == "row_id" or c.startswith("proba_"))
    if not np.array_equal(frame["row_id"].to_numpy(), np.asarray(rows)):
        return f"{path.name} holds other rows than this fold's"
    missing = [proba_column(label) for label in labels if proba_column(label) not in frame]
    if missing:
        return f"{path.name} lacks {', '.join(missing)}"
    return frame[[proba_column(label) for label in labels]].to_numpy(dtype=np.float64)


def stored_predictions(service: ExperimentService, experiment: Experiment, member: NamedConfig, run_type: RunType,
                       k: int, fold: Fold) -> tuple[np.ndarray | None, np.ndarray] | str:
    """``member``'s stored (val, test) probabilities for fold ``k``, or why there are none to reuse."""
    fold_dir = fold_dir_of(service, experiment, member.name, run_type, k)
    if not (fold_dir / METRICS_FILE).is_file():
        return "no finished run of this fold"
    if run_type is RunType.backtesting and member.config.fold_training_arguments:
        return "its backtest trains per-fold tuned values, the ensemble the config's own"
    stored = read_json(fold_dir / METRICS_FILE).get("identity") or {}
    expected = base_identity(experiment, member, run_type, k)
    changed = [key for key in expected if stored.get(key) != expected[key]]
    if changed:
        return f"its stored run differs in {', '.join(changed)}"
    test = _stored_proba(fold_dir / PREDICTIONS_FILE, fold.test, experiment.labels)
    if isinstance(test, str):
        return test
    if not len(fold.val):
        return None, test
    val = _stored_proba(fold_dir / VAL_PREDICTIONS_FILE, fold.val, experiment.labels)
    return val if isinstance(val, str) else (val, test)


def _members_found(service: ExperimentService, experiment: Experiment, named: NamedConfig, run_type: RunType,
                   k: int, fold: Fold, quiet: bool = False) -> tuple[Any, list[NamedConfig], dict[str, Any]] | None:
    if run_type is RunType.final_model or experiment.task.multi_label:  # members are trained for these
        return None
    model = named.build()
    if not isinstance(model, CombinesMembers):
        return None
    members = model.reusable_members()
    if not members:
        return None
    found, missing = {}, []
    for member in members:
        got = stored_predictions(service, experiment, member, run_type, k, fold)
        if isinstance(got, str):
            missing.append(f"{member.name}: {got}")
        else:
            found[member.name] = got
    if missing:
        if quiet:
            return None
        logger.info("%s %s fold %d: training its members, no stored run to reuse (%s)", named.name,
                    run_type.value, k + 1, "; ".join(missing))
        return None
    return model, members, found


def can_reuse_members(service: ExperimentService, experiment: Experiment, named: NamedConfig, run_type: RunType,
                      k: int, fold: Fold) -> bool:
    """Whether fold ``k`` of ``named`` would be combined from its members' stored runs (nothing to train).

    Says nothing: the fold's own run (``reused_outcome``) logs why its members are trained."""
    return _members_found(service, experiment, named, run_type, k, fold, quiet=True) is not None


def reused_outcome(service: ExperimentService, experiment: Experiment, named: NamedConfig, run_type: RunType,
                   k: int, fold: Fold, val: TextDataset) -> FoldOutcome | None:
    """Fold ``k`` of a model that combines members, from the members' stored runs; None when one is missing."""
    started = time.perf_counter()
    resolved = _members_found(service, experiment, named, run_type, k, fold)
    if resolved is None:
        return None
    model, members, found = resolved
    names = [member.name for member in members]
    model.labels = list(experiment.labels)
    val_probas = [found[name][0] for name in names] if len(fold.val) else None
    home = service.experiment_dir(experiment.experiment_id)
    sources = {name: str(fold_dir_of(service, experiment, name, run_type, k).relative_to(home)) for name in names}
    model.fit_from_member_predictions(names, val_probas, val.labels if len(fold.val) else None, sources)
    who = named.model_class.__name__
    proba = check_probabilities(model.combine([found[name][1] for name in names]), len(fold.test),
                                experiment.labels, who)
    val_proba = None if val_probas is None else check_probabilities(model.combine(val_probas), len(fold.val),
                                                                    experiment.labels, who)
    logger.info("%s %s fold %d: combined the stored predictions of %s (nothing trained)", named.name,
                run_type.value, k + 1, ", ".join(names))
    return FoldOutcome(model=model, proba=proba, val_proba=val_proba,
                       timings={"train_s": 0.0, "reuse_s": time.perf_counter() - started})
