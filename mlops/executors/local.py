"""The local executor: each fold trained in this process, one after another, in a scratch folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from mlops.core.io import work_dir_name
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.core.text_dataset import TextDataset
from mlops.experiments.fold import FoldOutcome, fit_and_predict


@contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A scratch folder for a model's checkpoints, removed afterwards whatever happens."""
    work_dir = work_dir_name(parent)  # carries our pid: a later run removes it if we are killed
    work_dir.mkdir()
    try:
        yield work_dir
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


class LocalExecutor:
    """Trains a fold where it is asked for; ``open`` and ``submit`` have nothing to prepare."""

    kind = "local"

    def open(self, configs: Sequence[NamedConfig]):
        """A context for one command's runs (Ray: the cluster, with each config's task size)."""
        return nullcontext(self)

    def submit(self, service, experiment, configs: Sequence[NamedConfig], run_type, pending: dict[str, list[int]],
               device: str | None) -> None:
        """Start the ``pending`` folds ahead of the runner's walk (Ray); locally they train when reached."""

    def arithmetic(self, named: NamedConfig, device: str | None) -> dict[str, Any]:
        """Device, threads, precision of a fold trained by this executor (part of the fold's identity)."""
        return named.model_class.arithmetic(named.arguments, device)

    def fit(self, named: NamedConfig, key: tuple[str, str, int] | None, train: TextDataset, val: TextDataset,
            test: TextDataset, labels: Sequence[str], context: FitContext, scratch_parent: Path) -> FoldOutcome:
        with scratch_dir(scratch_parent) as work_dir:
            context.work_dir = work_dir
            return fit_and_predict(named, train, val, test, labels, context)
