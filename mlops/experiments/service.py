"""Experiments on disk: where things live, creating the split plan, and the data of each run type."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.choices import RunType
from mlops.core.config import config_fingerprint, load_model_config_file
from mlops.core.errors import ExperimentError, MlopsError
from mlops.core.io import (check_plain_name, check_writable_directory, file_lock, file_sha256, read_json,
                           staged_directory, write_json)
from mlops.core.model_folder import is_model_folder
from mlops.core.provenance import environment_manifest
from mlops.core.text_dataset import TextDataset
from mlops.data.splitting import Fold, SplitParameters, SplitPlan, build_split_plan, leakage_groups
from mlops.core.multilabel import Task, label_matrix
from mlops.data.tables import DEFAULT_MAX_TEXT_CHARS, LabelledData, load_labelled_data

logger = logging.getLogger(__name__)

# The experiment folder: experiment.json and splits.npz, then runs/<config>/<run type>/ holding, per fold
# (fold_<k>/ for backtesting), metrics.json, predictions.csv and val_predictions.csv (the val rows, which an
# ensemble's weights can be fitted on without retraining its members), and per run summary.json and run.json;
# cli tune adds tuning/<study>.db (its Optuna study) and tuned/<config>_tuned.json (the best config).
EXPERIMENT_FILE = "experiment.json"
SPLITS_FILE = "splits.npz"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
VAL_PREDICTIONS_FILE = "val_predictions.csv"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
FINAL_RECORD_FILE = "final_model.json"  # in runs/<config>/: where a final model written elsewhere went
LOCK_FILE = ".lock"  # held (fcntl.flock) by the command writing the experiment; names it (pid, command)


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    target: str = "label"
    text_pair: str | None = None
    group: str | None = None


@dataclass
class Experiment:
    """A loaded experiment: its recorded description and its split plan, in original row numbers."""

    experiment_id: str
    directory: Path
    info: dict[str, Any]
    plan: SplitPlan

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def task(self) -> Task:
        return Task.from_dict(self.info.get("task"))

    @property
    def seed(self) -> int:
        return int(self.info["split_parameters"]["seed"])

    def made_on_current_splits(self, record: dict[str, Any]) -> bool:
        """Whether a fold record (metrics.json) was produced on this experiment's data and split parameters."""
        identity = record.get("identity") or {}
        return all(identity.get(key) == self.info.get(key) for key in ("input_sha256", "split_parameters"))


class ExperimentService:
    """Knows the artifacts layout and turns an experiment's splits into datasets."""

    def __init__(self, artifacts_dir: Path) -> None:
        self.artifacts_dir = Path(artifacts_dir)

    # --- paths ---------------------------------------------------------------------------------
    @property
    def experiments_dir(self) -> Path:
        return self.artifacts_dir / "experiments"

    def experiment_dir(self, experiment_id: str) -> Path:
        return self.experiments_dir / check_plain_name(experiment_id, "experiment id")

    def run_dir(self, experiment_id: str, model_config_name: str, run_type: RunType) -> Path:
        return self.experiment_dir(experiment_id) / "runs" / model_config_name / run_type.value

    def changed_config(self, experiment_id: str, model_config_name: str, run_type: RunType) -> str | None:
        """Why a run no longer matches its config (the file it was trained from now trains something else, as
        after a second ``tune`` rewrote it), or None. A run whose config file is gone is taken as it is."""
        record_path = self.run_dir(experiment_id, model_config_name, run_type) / RUN_FILE
        if not record_path.is_file():
            return None
        record = read_json(record_path)
        source, recorded = record.get("config_source"), record.get("config_sha256")
        if not source or not recorded or not Path(source).is_file():
            return None
        try:
            current = config_fingerprint(load_model_config_file(Path(source)))
        except MlopsError as exc:
            return f"its config file {source} no longer loads ({exc})"
        if current != recorded:
            return f"its config file {source} has changed since this run"
        return None

    def final_model_dir(self, experiment_id: str, model_config_name: str) -> Path | None:
        """Where the final model of a config is: its run folder, or the --model-output-dir recorded there."""
        default = self.run_dir(experiment_id, model_config_name, RunType.final_model)
        if is_model_folder(default):
            return default
        record = default.parent / FINAL_RECORD_FILE
        if record.is_file():
            candidate = Path(read_json(record)["model_dir"])
            if is_model_folder(candidate):
                return candidate
        return None

    def record_final_model_dir(self, experiment_id: str, model_config_name: str, model_dir: Path) -> None:
        """Note where a final model written outside the experiment (--model-output-dir) went."""
        runs_dir = self.run_dir(experiment_id, model_config_name, RunType.final_model).parent
        runs_dir.mkdir(parents=True, exist_ok=True)
        write_json(runs_dir / FINAL_RECORD_FILE, {"model_dir": str(Path(model_dir).resolve())})

    def tuned_dir(self, experiment_id: str) -> Path:
        """``tuned/``: the best configs ``cli tune`` wrote, ``<config>_tuned.json``, which configs can be named by."""
        return self.experiment_dir(experiment_id) / "tuned"

    def audit_dir(self, experiment_id: str) -> Path:
        """``audit/``: what ``cli audit`` found (label issues, near-duplicates, odd rows, audit.json)."""
        return self.experiment_dir(experiment_id) / "audit"

    def tuning_dir(self, experiment_id: str) -> Path:
        """``tuning/``: the Optuna studies of ``cli tune`` (``<study>.db``, SQLite) unless --storage says otherwise."""
        return self.experiment_dir(experiment_id) / "tuning"

    def experiment_ids(self) -> list[str]:
        directory = self.experiments_dir
        if not directory.is_dir():
            if directory.exists():
                raise ExperimentError(f"{directory} is a file, not the folder of experiments; move it away, or "
                                      "point --artifacts-dir (or MLOPS_ARTIFACTS_DIR) at another folder.")
            return []
        try:
            return sorted(p.name for p in directory.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and (p / EXPERIMENT_FILE).is_file())
        except PermissionError:
            raise ExperimentError(f"{directory} is not readable for this user; fix its permissions, or point "
                                  "--artifacts-dir (or MLOPS_ARTIFACTS_DIR) at another folder.") from None

    def lock(self, experiment_id: str, command: str, *, wait: bool = False) -> AbstractContextManager[None]:
        """One writer per experiment: hold its lock file while ``command`` (as the user typed it, roughly) runs.
        A new experiment has no folder yet and needs none: its folder appears whole, by a rename."""
        directory = self.experiment_dir(experiment_id)
        if not directory.is_dir():
            return nullcontext()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return file_lock(directory / LOCK_FILE, f"pid {os.getpid()} running `{command}` (since {started})",
                         what=f"experiment {experiment_id!r}", wait=wait)

    # --- creation ------------------------------------------------------------------------------
    def create_experiment(
        self,
        experiment_id: str,
        input_file: Path,
        columns: Columns,
        params: SplitParameters,
        *,
        encoding: str = "utf-8",
        strict: bool = False,
        force: bool = False,
        normalize_labels: bool = False,
        max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
        task: Task | None = None,
    ) -> Experiment:
        directory = self.experiment_dir(experiment_id)
        self.experiment_ids()  # a file named experiments, an unreadable folder: say so before reading any data
        check_writable_directory(self.experiments_dir, "the artifacts root (--artifacts-dir)")
        if directory.exists() and not force:
            raise ExperimentError(
                f"experiment {experiment_id!r} already exists at {directory}; choose another --experiment-id "
                "or pass --force to replace it (its runs are deleted)."
            )
        params.validate()
        input_file = Path(input_file).resolve()
        data = load_labelled_data(
            input_file, text_column=columns.text, target_column=columns.target,
            text_pair_column=columns.text_pair, group_column=columns.group, encoding=encoding, strict=strict,
            normalize_labels=normalize_labels, max_text_chars=max_text_chars, task=task,
        )
        task = task or Task()
        frame = data.frame
        texts = frame["text"].tolist()
        pairs = near_duplicate_pairs(comparable_texts(frame), params.near_duplicates,
                                     params.near_duplicate_threshold)
        groups = leakage_groups(
            texts,
            frame["text_pair"].tolist() if columns.text_pair else None,
            frame["group"].tolist() if columns.group else None,
            linked_pairs=None if pairs is None else (pairs.first, pairs.second),
        )
        n_duplicate_rows = len(groups) - len(np.unique(groups))
        if n_duplicate_rows:
            logger.info("%d rows share a normalised text%s or group with another row; each such group stays on "
                        "one side of every split", n_duplicate_rows, "" if pairs is None else " (or are near-duplicates)")
        y = label_matrix(frame["label"].tolist(), data.labels) if task.multi_label else frame["label"].to_numpy()
        plan = build_split_plan(y, groups, params, labels=data.labels)
        row_ids = data.row_ids
        info = {
            "experiment_id": experiment_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input_file": str(input_file),
            "input_sha256": file_sha256(input_file),
            "encoding": encoding,
            "strict": strict,
            "normalize_labels": normalize_labels,
            "merged_labels": data.merged_labels,
            "max_text_chars": max_text_chars or None,
            "columns": columns.__dict__,
            "labels": data.labels,
            **({"task": task.to_dict(),
                "label_counts": dict(zip(data.labels, y.sum(axis=0).tolist())),
                "rows_without_label": int((y.sum(axis=1) == 0).sum())} if task.multi_label else
               {"class_counts": frame["label"].value_counts().sort_index().to_dict()}),
            "rows_used": len(frame),
            "rows_dropped_empty": data.dropped_empty,
            "rows_in_duplicate_or_group_clusters": int(n_duplicate_rows),
            **({} if pairs is None else {"near_duplicate_pairs": len(pairs)}),
            "split_parameters": params.to_dict(),
            "split_sizes": _split_sizes(plan),
            "environment": environment_manifest(),
        }
        with staged_directory(directory, replace=force) as scratch:
            np.savez_compressed(scratch / SPLITS_FILE, **_plan_arrays(plan, row_ids))
            write_json(scratch / EXPERIMENT_FILE, info)
        logger.info("experiment %s written to %s", experiment_id, directory)
        return Experiment(experiment_id, directory, info, _plan_from_arrays(_plan_arrays(plan, row_ids)))

    # --- loading -------------------------------------------------------------------------------
    def load_experiment(self, experiment_id: str) -> Experiment:
        directory = self.experiment_dir(experiment_id)
        if not (directory / EXPERIMENT_FILE).is_file():
            known = self.experiment_ids()
            raise ExperimentError(
                f"unknown experiment {experiment_id!r} under {self.experiments_dir} (known: {', '.join(known) or 'none'}). "
                "Create it with `cli generate-splits`, or point --artifacts-dir at the right folder."
            )
        info = read_json(directory / EXPERIMENT_FILE)
        try:
            with np.load(directory / SPLITS_FILE, allow_pickle=False) as arrays:
                stored = {key: arrays[key] for key in arrays.files}
        except (OSError, ValueError) as exc:
            raise ExperimentError(f"{directory / SPLITS_FILE} is missing or corrupt ({exc}); rerun generate-splits --force.") from None
        return Experiment(experiment_id, directory, info, _plan_from_arrays(stored))

    def verify_input(self, experiment: Experiment) -> Path:
        """Check the experiment's input is byte-for-byte the file the splits were made from."""
        info = experiment.info
        path = Path(info["input_file"])
        if not path.is_file():
            raise ExperimentError(
                f"the input of experiment {experiment.experiment_id!r}, {path}, is gone; restore it there or "
                "regenerate the splits with --force."
            )
        digest = file_sha256(path)
        if digest != info["input_sha256"]:
            raise ExperimentError(
                f"{path} changed since experiment {experiment.experiment_id!r} was created (sha256 {digest[:12]} "
                f"!= recorded {info['input_sha256'][:12]}); its splits no longer describe the data. Regenerate "
                "them with `generate-splits --force`, or restore the original file."
            )
        return path

    def load_data(self, experiment: Experiment) -> LabelledData:
        """Re-read the experiment's input after checking it is the file the splits were made from."""
        info = experiment.info
        path = self.verify_input(experiment)
        columns = Columns(**info["columns"])
        data = load_labelled_data(
            path, text_column=columns.text, target_column=columns.target, text_pair_column=columns.text_pair,
            group_column=columns.group, encoding=info["encoding"], strict=info.get("strict", False),
            normalize_labels=info.get("normalize_labels", False),
            max_text_chars=info.get("max_text_chars"),  # absent in older experiments: they kept every character
            task=experiment.task,
        )
        if len(data.frame) != info["rows_used"]:
            raise ExperimentError(f"{path} now yields {len(data.frame)} usable rows, not {info['rows_used']}.")
        return data

    def folds(self, experiment: Experiment, run_type: RunType) -> list[Fold]:
        plan = experiment.plan
        if run_type is RunType.backtesting:
            return plan.backtesting
        if run_type is RunType.performance_estimation:
            return [plan.performance_estimation]
        return [plan.final_model]


def comparable_texts(frame) -> list[str]:
    """The text of each row as near-duplicate detection compares it (a pair's two texts joined)."""
    if "text_pair" not in frame:
        return frame["text"].tolist()
    return [f"{a} {b}" for a, b in zip(frame["text"], frame["text_pair"], strict=True)]


def near_duplicate_pairs(texts: list[str], method: str, threshold: float | None, *, device: str | None = None,
                         progress=None):
    """Near-duplicate row pairs by ``method`` (minhash or embedding; None for off)."""
    from mlops.data import near_duplicates

    if method == "off":
        return None
    if method == "minhash":
        return near_duplicates.minhash_pairs(texts, threshold=threshold or near_duplicates.DEFAULT_JACCARD,
                                             progress=progress)
    return near_duplicates.embedding_pairs(embed_texts(texts, device=device),
                                           threshold=threshold or near_duplicates.DEFAULT_COSINE)


#: The sentence encoder that embeds texts for near-duplicate and outlier search (shipped offline).
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def embed_texts(texts: list[str], *, device: str | None = None, model: str = EMBEDDING_MODEL) -> np.ndarray:
    """Mean-pooled sentence embeddings of ``texts`` (the shipped MiniLM unless ``model`` says otherwise)."""
    from models.hf_encoder.embedding import pretrained_embedder

    logger.info("embedding %d texts with %s", len(texts), model)
    return pretrained_embedder(model, device=device, batch_size=128, pooling="mean")(texts)


def dataset_at(data: LabelledData, row_ids: np.ndarray, *, with_labels: bool = True) -> TextDataset:
    """The rows of ``data`` with the given original row numbers, as a TextDataset."""
    frame = data.frame.loc[row_ids]
    return TextDataset(
        texts=frame["text"].tolist(),
        labels=frame["label"].tolist() if with_labels else None,
        text_pairs=frame["text_pair"].tolist() if "text_pair" in frame else None,
    )


def _split_sizes(plan: SplitPlan) -> dict[str, Any]:
    return {
        "holdout_test": len(plan.holdout_test),
        "train_val": len(plan.train_val),
        "backtesting": [{"train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in plan.backtesting],
        "performance_estimation": {"train": len(plan.performance_estimation.train),
                                   "val": len(plan.performance_estimation.val),
                                   "test": len(plan.performance_estimation.test)},
        "final_model": {"train": len(plan.final_model.train), "val": len(plan.final_model.val)},
    }


def _plan_arrays(plan: SplitPlan, row_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Split positions converted to original row numbers (0 = first data row of the input file)."""
    arrays = {"holdout_test": row_ids[plan.holdout_test], "train_val": row_ids[plan.train_val]}
    for k, fold in enumerate(plan.backtesting):
        for part in ("train", "val", "test"):
            arrays[f"backtesting_{k}_{part}"] = row_ids[getattr(fold, part)]
    for part in ("train", "val"):
        arrays[f"performance_estimation_{part}"] = row_ids[getattr(plan.performance_estimation, part)]
        arrays[f"final_model_{part}"] = row_ids[getattr(plan.final_model, part)]
    return {key: value.astype(np.int64) for key, value in arrays.items()}


def _plan_from_arrays(arrays: dict[str, np.ndarray]) -> SplitPlan:
    n_folds = len([k for k in arrays if k.startswith("backtesting_") and k.endswith("_test")])
    folds = [Fold(arrays[f"backtesting_{k}_train"], arrays[f"backtesting_{k}_val"], arrays[f"backtesting_{k}_test"])
             for k in range(n_folds)]
    return SplitPlan(
        holdout_test=arrays["holdout_test"],
        train_val=arrays["train_val"],
        backtesting=folds,
        performance_estimation=Fold(arrays["performance_estimation_train"], arrays["performance_estimation_val"],
                                    arrays["holdout_test"]),
        final_model=Fold(arrays["final_model_train"], arrays["final_model_val"]),
    )
