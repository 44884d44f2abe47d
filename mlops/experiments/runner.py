"""ExperimentRunner: backtesting, the hold-out estimate and the final model, with resumable folds."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops.core.callbacks import TrainingCallback
from mlops.core.config import config_fingerprint, config_json
from mlops.core.errors import ConfigError, ExperimentError, MlopsError
from mlops.core.io import (check_writable_directory, ensure_directory, read_json, remove_stale_scratch,
                           staged_directory, write_json)
from mlops.core.metrics import compute_metrics, summarise_folds
from mlops.core.model_folder import MODEL_FILE, is_model_folder, save_model_folder, write_manifest
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.core.provenance import environment_manifest
from mlops.data.splitting import Fold
from mlops.executors.local import LocalExecutor
from mlops.experiments.fold import FoldOutcome, predictions_frame
from mlops.experiments.reuse import base_identity, can_reuse_members, reused_outcome
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, RUN_FILE, SUMMARY_FILE,
                                       VAL_PREDICTIONS_FILE, Experiment, ExperimentService, RunType, dataset_at)
from mlops.tracking.session import FoldRun, Tracking

logger = logging.getLogger(__name__)


@contextmanager
def _throwaway_directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "model"
        scratch.mkdir()
        yield scratch


def _separator(experiment: Experiment) -> str | None:
    """How a multi-label experiment joins label sets in its files; None for one label per row."""
    task = experiment.task
    return task.separator if task.multi_label else None


def is_main_process() -> bool:
    """False in the non-zero ranks of a torchrun / accelerate launch; only rank 0 writes artifacts."""
    return os.environ.get("RANK", "0") == "0"


def _short(value: Any) -> str:
    """An identity value for a message, compact (JSON for dicts and lists), cut at 120 characters."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class RunResult:
    experiment_id: str
    config_name: str
    run_type: RunType
    directory: Path
    fold_metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    resumed_folds: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FinalModelResult:
    experiment_id: str
    config_name: str
    model_dir: Path
    validation_metrics: dict[str, Any] | None
    timings: dict[str, float]
    export: dict[str, Any] | None = None  # the ONNX export written after training, if any


class ExperimentRunner:
    """Trains a fresh model per fold from a config and writes predictions, metrics and manifests.

    ``callbacks`` (tracking, say) are handed to every model's training loop through ``FitContext``.
    """

    def __init__(self, service: ExperimentService, *, device: str | None = None, show_progress: bool = True,
                 callbacks: list[TrainingCallback] | None = None, tracking: Tracking | None = None) -> None:
        self.service = service
        self.device = device
        self.show_progress = show_progress
        self.callbacks = list(callbacks or [])
        self.writes = is_main_process()
        self.tracking = tracking if tracking is not None and self.writes else Tracking([])

    # --- shared pieces ---------------------------------------------------------------------------
    def _identity(self, experiment: Experiment, named: NamedConfig, run_type: RunType, fold: int,
                  executor: LocalExecutor) -> dict[str, Any]:
        # Device, threads, precision: what changes the numbers besides the config, for the arguments and
        # device the fold trains with (under Ray: the task's CPUs and GPUs).
        return {**base_identity(experiment, named, run_type, fold),
                "arithmetic": executor.arithmetic(named, self.device)}

    def _context(self, seed: int, work_dir: Path | None, extra: list[TrainingCallback] | None = None) -> FitContext:
        return FitContext(seed=seed, work_dir=work_dir, device=self.device, show_progress=self.show_progress,
                          callbacks=[*self.callbacks, *(extra or [])])

    @staticmethod
    def _tracking_params(experiment: Experiment, named: NamedConfig, run_type: RunType) -> dict[str, Any]:
        return {"experiment_id": experiment.experiment_id, "run_type": run_type.value, "config_name": named.name,
                "config_source": named.source, "config": config_json(named.config),
                "config_sha256": config_fingerprint(named.config), "seed": experiment.seed,
                "input_sha256": experiment.info["input_sha256"], "split_parameters": experiment.info["split_parameters"],
                "labels": experiment.labels}

    def pending_folds(self, experiment: Experiment, named: NamedConfig, run_type: RunType, force: bool,
                      executor: LocalExecutor) -> list[int]:
        """The folds a run of ``named`` would train now: those not complete with the same identity."""
        run_dir = self.service.run_dir(experiment.experiment_id, named.name, run_type)
        return [k for k in range(len(self.service.folds(experiment, run_type)))
                if self._completed_fold(run_dir / f"fold_{k}" if run_type is RunType.backtesting else run_dir,
                                        self._identity(experiment, named, run_type, k, executor), force,
                                        named) is None]

    def _completed_fold(self, fold_dir: Path, identity: dict[str, Any], force: bool,
                        named: NamedConfig | None = None) -> dict[str, Any] | None:
        """The stored result of a finished fold with the same identity, or None if it must be (re)run."""
        record_path = fold_dir / METRICS_FILE
        if force or not record_path.is_file():
            return None
        record = read_json(record_path)
        stored = dict(record.get("identity") or {})
        if "arithmetic" not in stored and named is not None:  # recorded before identities carried it
            stored["arithmetic"] = named.model_class.arithmetic(named.arguments, None, record.get("runtime") or {})
        if stored != identity:
            changed = [f"{k} {_short(stored.get(k))} -> {_short(identity[k])}" for k in identity
                       if stored.get(k) != identity[k]]
            raise ExperimentError(
                f"{fold_dir} was produced with different settings ({'; '.join(changed)}); mixing them would make "
                "the summary meaningless. Rerun with --force to retrain every fold, or restore the old setting "
                "(--device; training_arguments.num_threads or precision; under Ray, resources.cpus)."
            )
        return record

    def _train_fold(self, experiment: Experiment, named: NamedConfig, run_type: RunType, k: int, fold: Fold, data,
                    run_dir: Path, fold_dir: Path, identity: dict[str, Any], tracked: FoldRun,
                    executor: LocalExecutor) -> dict[str, Any]:
        """Train and score one fold, write its folder, and return its record (metrics, timings...)."""
        n_folds = len(self.service.folds(experiment, run_type))
        train, val, test = (dataset_at(data, rows) for rows in (fold.train, fold.val, fold.test))
        if run_type is RunType.backtesting:
            named = named.for_backtesting_fold(k)
        logger.info("%s fold %d/%d: training %s on %d rows (val %d), scoring %d rows", run_type.value, k + 1,
                    n_folds, named.name, len(train), len(val), len(test))
        try:
            outcome = (reused_outcome(self.service, experiment, named, run_type, k, fold, val) or
                       executor.fit(named, (named.name, run_type.value, k), train, val, test, experiment.labels,
                                    self._context(experiment.seed, None, tracked.callbacks), run_dir))
        except MlopsError as exc:
            raise type(exc)(f"{run_type.value} fold {k + 1}/{n_folds} of {named.name} failed: {exc}") from exc
        t0 = time.perf_counter()
        # One split has no spread across folds to show how sure it is: give it 95% intervals instead.
        metrics = compute_metrics(test.labels, outcome.proba, experiment.labels, intervals=n_folds == 1,
                                  seed=experiment.seed, thresholds=outcome.thresholds)
        record = {
            "identity": identity,
            "metrics": metrics,
            "metrics_uncalibrated": (None if outcome.proba_uncalibrated is None else
                                     compute_metrics(test.labels, outcome.proba_uncalibrated, experiment.labels,
                                                     thresholds=outcome.thresholds)),
            "timings": {**outcome.timings},
            "runtime": outcome.model.runtime_info(),
            "rows": {"train": len(fold.train), "val": len(fold.val), "test": len(test)},
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if self.writes:
            frames = {PREDICTIONS_FILE: (fold.test, test, outcome.proba), VAL_PREDICTIONS_FILE: (fold.val, val,
                                                                                                  outcome.val_proba)}
            self._write_fold(fold_dir, {name: predictions_frame(*parts, experiment.labels, thresholds=outcome.thresholds,
                                                                separator=_separator(experiment))
                                        for name, parts in frames.items() if parts[2] is not None}, record)
        record["timings"]["write_s"] = time.perf_counter() - t0
        logger.info("%s fold %d/%d: accuracy %.4f, macro-F1 %.4f (train %.1fs)", run_type.value, k + 1, n_folds,
                    metrics["accuracy"], metrics["macro_f1"], outcome.timings.get("train_s", 0.0))
        return record

    def _run_folds(self, experiment: Experiment, named: NamedConfig, run_type: RunType, force: bool,
                   executor: LocalExecutor) -> RunResult:
        started = time.perf_counter()
        folds = self.service.folds(experiment, run_type)
        run_dir = self.service.run_dir(experiment.experiment_id, named.name, run_type)
        ensure_directory(run_dir)  # every rank needs it for its scratch work_dir
        if self.writes:  # what a killed run left (scratch of dead processes) goes before anything new is written
            remove_stale_scratch(run_dir)
        self.service.verify_input(experiment)  # even when every fold is reused
        if run_type is RunType.backtesting:
            named.check_fold_tuning(experiment.experiment_id, experiment.info, len(folds))
        if force and self.writes:  # nothing of the old run may stand, nor come back if this one is interrupted
            self._discard_results(run_dir, run_type)
        data, load_s = None, 0.0
        fold_metrics: list[dict[str, Any]] = []
        resumed: list[int] = []
        stage_totals: dict[str, float] = {}
        params = self._tracking_params(experiment, named, run_type)
        with self.tracking.command(f"{named.name} {run_type.value}", params, run_dir):
            for k, fold in enumerate(folds):
                fold_dir = run_dir / f"fold_{k}" if run_type is RunType.backtesting else run_dir
                identity = self._identity(experiment, named, run_type, k, executor)
                done = self._completed_fold(fold_dir, identity, force, named)
                with self.tracking.fold(f"fold_{k}", {**params, "fold": k, "resumed": done is not None},
                                        run_dir) as tracked:
                    if done is not None:
                        logger.info("%s fold %d/%d already complete (macro-F1 %.4f); reusing it (--force "
                                    "retrains)", run_type.value, k + 1, len(folds), done["metrics"]["macro_f1"])
                        fold_metrics.append(done["metrics"])
                        resumed.append(k)
                        tracked.log_result(done["metrics"], fold_dir, experiment.labels)
                        continue
                    if data is None:
                        t0 = time.perf_counter()
                        data = self.service.load_data(experiment)
                        load_s = time.perf_counter() - t0
                    record = self._train_fold(experiment, named, run_type, k, fold, data, run_dir, fold_dir,
                                              identity, tracked, executor)
                    tracked.log_result(record["metrics"], fold_dir, experiment.labels)
                for key, value in record["timings"].items():
                    stage_totals[key] = stage_totals.get(key, 0.0) + value
                fold_metrics.append(record["metrics"])
            summary = summarise_folds(fold_metrics)
            self.tracking.log_summary(summary)
        timings = {"load_s": load_s, **stage_totals, "total_s": time.perf_counter() - started}
        if self.writes:
            write_json(run_dir / RUN_FILE, self._run_record(experiment, named, run_type, resumed, timings))
            write_json(run_dir / SUMMARY_FILE, summary)
        return RunResult(experiment.experiment_id, named.name, run_type, run_dir, fold_metrics, summary, resumed, timings)

    @staticmethod
    def _discard_results(run_dir: Path, run_type: RunType) -> None:
        """--force: remove the old summary and every old fold's results before the first new fold trains."""
        for stale in (SUMMARY_FILE, RUN_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        if run_type is RunType.backtesting:
            for fold_dir in run_dir.glob("fold_*"):
                shutil.rmtree(fold_dir)
        else:
            for stale in (METRICS_FILE, PREDICTIONS_FILE, VAL_PREDICTIONS_FILE):
                (run_dir / stale).unlink(missing_ok=True)

    @staticmethod
    def _run_record(experiment: Experiment, named: NamedConfig, run_type: RunType, resumed: list[int],
                    timings: dict[str, float]) -> dict[str, Any]:
        return {
            "experiment_id": experiment.experiment_id,
            "config_name": named.name,
            "config_source": named.source,
            "config": config_json(named.config),
            "config_sha256": config_fingerprint(named.config),
            "run_type": run_type.value,
            "seed": experiment.seed,
            "input_sha256": experiment.info["input_sha256"],
            "labels": experiment.labels,
            "resumed_folds": resumed,
            "timings_this_invocation": timings,
            "environment": environment_manifest(),
        }

    @staticmethod
    def _write_fold(fold_dir: Path, frames: dict[str, Any], record: dict[str, Any]) -> None:
        """The files appear at once: a fold counts as complete only once its folder holds metrics.json."""
        with staged_directory(fold_dir, replace=True) as scratch:
            for name, frame in frames.items():
                frame.to_csv(scratch / name, index=False)
            write_json(scratch / METRICS_FILE, record)

    # --- the three run types -----------------------------------------------------------------------
    def run(self, experiment: Experiment, configs: list[NamedConfig], run_type: RunType, *, force: bool = False,
            executor: LocalExecutor | None = None) -> list[RunResult]:
        """One run (backtesting or the hold-out estimate) of each config, its folds trained by ``executor``
        (default: this process). The runner writes every fold folder, whoever trained it."""
        names = [named.name for named in configs]
        if len(set(names)) != len(names):
            raise ConfigError(f"--model-config-name names a config twice ({', '.join(names)}); name each once.")
        if run_type is RunType.backtesting:  # before any fold trains with values that are not this experiment's
            for named in configs:
                named.check_fold_tuning(experiment.experiment_id, experiment.info, len(experiment.plan.backtesting),
                                        warn=False)
        executor = executor or LocalExecutor()
        with executor.open(configs):
            pending = {named.name: self.pending_folds(experiment, named, run_type, force, executor)
                       for named in configs}
            if executor.kind != "local":  # an ensemble fold combining its members' stored runs trains nothing
                folds = self.service.folds(experiment, run_type)
                pending = {named.name: [k for k in pending[named.name] if not can_reuse_members(
                    self.service, experiment, named, run_type, k, folds[k])] for named in configs}
            if executor.kind != "local" and any(pending.values()):
                if self.callbacks or self.tracking:
                    logger.warning("--executor %s: per-epoch tracking callbacks run only in the driver, so tasks "
                                   "log just each fold's result", executor.kind)
                executor.submit(self.service, experiment, configs, run_type, pending, self.device)
            return [self._run_folds(experiment, named, run_type, force, executor) for named in configs]

    @staticmethod
    def _check_model_output(model_dir: Path, force: bool) -> None:
        """Refuse before training what would fail (or destroy something) only when the model is saved."""
        check_writable_directory(model_dir.parent, "--model-output-dir")
        if model_dir.exists() and any(model_dir.iterdir()):
            if not is_model_folder(model_dir):
                raise ExperimentError(
                    f"{model_dir} is a non-empty folder that is not a model folder (no {MODEL_FILE}); refusing to "
                    "replace it even with --force. Choose a new or empty --model-output-dir."
                )
            if not force:
                raise ExperimentError(
                    f"{model_dir} already holds a model; pass --force to replace it, or choose another "
                    "--model-output-dir."
                )

    def train_final_model(
        self, experiment: Experiment, named: NamedConfig, *, model_output_dir: Path | None = None, force: bool = False
    ) -> FinalModelResult:
        experiment_id = experiment.experiment_id
        run_dir = self.service.run_dir(experiment_id, named.name, RunType.final_model)
        model_dir = Path(model_output_dir) if model_output_dir else run_dir
        self._check_model_output(model_dir, force)
        started = time.perf_counter()
        data = self.service.load_data(experiment)
        load_s = time.perf_counter() - started
        fold = experiment.plan.final_model
        labels = experiment.labels
        logger.info("final model %s: training on %d rows, validating on %d", named.name, len(fold.train),
                    len(fold.val))
        ensure_directory(model_dir.parent)
        if self.writes:
            remove_stale_scratch(model_dir.parent)  # a killed run's .work-* and .<model>.partial-* folders
        # Ranks other than 0 of a distributed launch train alongside but write into a throwaway folder.
        staging = staged_directory(model_dir, replace=True) if self.writes else _throwaway_directory()
        params = self._tracking_params(experiment, named, RunType.final_model)
        with self.tracking.command(f"{named.name} final_model", params, run_dir), \
                self.tracking.fold("final_model", params, run_dir) as tracked, staging as scratch:
            train, val = dataset_at(data, fold.train), dataset_at(data, fold.val)
            outcome = LocalExecutor().fit(named, None, train, val, val, labels,
                                          self._context(experiment.seed, None, tracked.callbacks), scratch.parent)
            val_metrics = (compute_metrics(val.labels, outcome.proba, labels, thresholds=outcome.thresholds)
                           if outcome.proba is not None else None)
            save_s = save_model_folder(scratch, outcome.model, named.name, named.config, labels,
                                       text_pair=experiment.info["columns"].get("text_pair") is not None,
                                       task=experiment.task, thresholds=outcome.thresholds)
            timings = {"load_s": load_s, **outcome.timings, "save_s": save_s}
            write_manifest(scratch, self._final_manifest(experiment, named, fold, outcome, val_metrics, timings))
            if val_metrics is not None:
                tracked.log_result(val_metrics, None, labels)
        if model_output_dir and self.writes:
            self.service.record_final_model_dir(experiment_id, named.name, model_dir)
        logger.info("final model written to %s", model_dir)
        return FinalModelResult(experiment_id, named.name, model_dir, val_metrics, timings)

    @staticmethod
    def _final_manifest(experiment: Experiment, named: NamedConfig, fold: Fold, outcome: FoldOutcome,
                        val_metrics: dict[str, Any] | None, timings: dict[str, float]) -> dict[str, Any]:
        info = experiment.info
        return {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "experiment_id": experiment.experiment_id,
            "config_name": named.name,
            "config_source": named.source,
            "config_sha256": config_fingerprint(named.config),
            "seed": experiment.seed,
            "input_file": info["input_file"],
            "input_sha256": info["input_sha256"],
            "columns": info["columns"],
            "encoding": info.get("encoding", "utf-8"),
            "split_parameters": info["split_parameters"],
            "rows": {"train": len(fold.train), "val": len(fold.val)},
            "validation_metrics_note": "on the final model's own validation split, used for early stopping: "
                                       "optimistic; see estimate-performance for an honest figure",
            "validation_metrics": val_metrics,
            "runtime": outcome.model.runtime_info(),
            "timings": timings,
            "environment": environment_manifest(),
        }
