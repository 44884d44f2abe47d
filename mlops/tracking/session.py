"""The tracking session the runner talks to: parent and nested runs over the asked-for backends."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlops.core.callbacks import LoopState, TrainingCallback
from mlops.core.errors import ConfigError
from mlops.experiments.service import METRICS_FILE
from mlops.tracking.base import Backend, fold_metrics

logger = logging.getLogger(__name__)

TrackKind = Literal["mlflow", "tensorboard"]
KINDS: tuple[str, ...] = ("mlflow", "tensorboard")
EPOCH_KEYS = ("train_loss", "validation_f1_macro", "seconds", "samples_per_second")


class _EpochLogger(TrainingCallback):
    def __init__(self, tracking: Tracking, runs: dict[str, Any]) -> None:
        self.tracking, self.runs = tracking, runs

    def on_epoch_end(self, state: LoopState) -> None:
        record = state.history[-1]
        values = {key: float(record[key]) for key in EPOCH_KEYS if isinstance(record.get(key), (int, float))}
        self.tracking._each(lambda backend: backend.log_metrics(self.runs[backend.name], values, step=state.epoch),
                            only=self.runs)


class Tracking:
    """The tracking of one command, over the backends asked for; every backend call is guarded."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = list(backends)
        self._parents: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self.backends)

    def _each(self, call, only: dict[str, Any] | None = None) -> None:
        for backend in list(self.backends):
            if only is not None and backend.name not in only:
                continue
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001 - tracking must never fail a training
                logger.warning("tracking with %s failed (%s: %s); training goes on without it", backend.name,
                               type(exc).__name__, exc)
                self.backends.remove(backend)

    def _start(self, name: str, params: dict[str, Any], run_dir: Path, parents: dict[str, Any] | None):
        runs: dict[str, Any] = {}

        def start(backend: Backend) -> None:
            runs[backend.name] = backend.start_run(name, params, run_dir,
                                                   None if parents is None else parents.get(backend.name))

        self._each(start)
        return runs

    def _end(self, runs: dict[str, Any], status: str) -> None:
        self._each(lambda backend: backend.end_run(runs[backend.name], status), only=runs)

    @contextmanager
    def command(self, name: str, params: dict[str, Any], run_dir: Path) -> Iterator[None]:
        """The parent run of one command (a backtest, an estimate, a final model)."""
        self._parents = self._start(name, params, run_dir, None)
        try:
            yield
        except BaseException:
            self._end(self._parents, "FAILED")
            raise
        self._end(self._parents, "FINISHED")

    def log_summary(self, summary: dict[str, Any]) -> None:
        """The command's headline figures on its parent run: each metric's mean and std over the folds."""
        values = {f"{name}_{stat}": float(entry[stat]) for name, entry in summary.items()
                  if isinstance(entry, dict) for stat in ("mean", "std") if entry.get(stat) is not None}
        if values and self._parents:
            self._each(lambda backend: backend.log_metrics(self._parents[backend.name], values), self._parents)

    @contextmanager
    def fold(self, name: str, params: dict[str, Any], run_dir: Path) -> Iterator[FoldRun]:
        """A nested run; the yielded object gives the loop's callback and logs the fold's results."""
        runs = self._start(name, params, run_dir, self._parents)
        run = FoldRun(self, runs)
        try:
            yield run
        except BaseException:
            self._end(runs, "FAILED")
            raise
        self._end(runs, "FINISHED")


class FoldRun:
    def __init__(self, tracking: Tracking, runs: dict[str, Any]) -> None:
        self.tracking, self.runs = tracking, runs

    @property
    def callbacks(self) -> list[TrainingCallback]:
        return [_EpochLogger(self.tracking, self.runs)] if self.runs else []

    def log_result(self, metrics: dict[str, Any], folder: Path | None, labels: list[str]) -> None:
        """The fold's test metrics, its metrics.json (when ``folder`` holds one) and a confusion-matrix PNG."""
        if not self.runs:
            return
        values = fold_metrics(metrics)
        self.tracking._each(lambda backend: backend.log_metrics(self.runs[backend.name], values), only=self.runs)
        with tempfile.TemporaryDirectory() as tmp:
            files = [folder / METRICS_FILE] if folder is not None and (folder / METRICS_FILE).is_file() else []
            matrix = (metrics.get("confusion_matrix") or metrics.get("co_occurrence") or {}).get("matrix")
            if matrix is not None:
                from mlops.core.plots import confusion_matrices

                support = ([metrics["per_class"][label]["support"] for label in labels] if "co_occurrence" in metrics
                           else None)  # multi-label: normalised by the rows with each true label
                png = Path(tmp) / ("co_occurrence.png" if support is not None else "confusion_matrix.png")
                png.write_bytes(confusion_matrices(np.asarray(matrix), labels, "test rows", row_totals=support))
                files.append(png)
            self.tracking._each(lambda backend: backend.log_files(self.runs[backend.name], files), only=self.runs)


def make_tracking(kinds: list[str] | None, artifacts_dir: Path) -> Tracking:
    """A session over the asked-for backends (none: a session that does nothing)."""
    backends: list[Backend] = []
    for kind in dict.fromkeys(kinds or []):
        if kind not in KINDS:
            raise ConfigError(f"--track {kind!r}: expected one of {', '.join(KINDS)}.")
        try:
            if kind == "mlflow":
                from mlops.tracking.mlflow_backend import MlflowBackend

                backends.append(MlflowBackend(Path(artifacts_dir)))
            else:
                from mlops.tracking.tensorboard_backend import TensorboardBackend

                backends.append(TensorboardBackend())
        except ImportError as exc:
            raise ConfigError(f"--track {kind} needs the package {exc.name!r}; install the tracking extra "
                              "(`uv sync`, or `pip install 'textclf-mlops[tracking]'`).") from None
    return Tracking(backends)
