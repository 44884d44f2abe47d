"""TensorBoard: event files beside the run folders, ``runs/<config>/tensorboard/<run type>/<fold>``.

They sit next to (not inside) the run type's folder because a finished run's folder is replaced whole
when its results are written. Read them with ``tensorboard --logdir <artifacts>/experiments/<id>/runs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops.tracking.base import Backend

TENSORBOARD_DIR = "tensorboard"
COMMAND_RUN = "command"  # the handle of a command's run, which writes no event file of its own


class TensorboardBackend(Backend):
    name = "tensorboard"

    def __init__(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter

    def start_run(self, name: str, params: dict[str, Any], run_dir: Path, parent: Any = None):
        if parent is None:  # the command's run: its folds write their own event files below it
            return COMMAND_RUN
        writer = self._writer_class(log_dir=str(Path(run_dir).parent / TENSORBOARD_DIR / Path(run_dir).name / name))
        writer.add_text("params", f"```\n{json.dumps(params, indent=2, default=str)}\n```")
        return writer

    def log_metrics(self, run, metrics: dict[str, float], step: int | None = None) -> None:
        if run == COMMAND_RUN:
            return
        prefix = "epoch" if step is not None else "test"
        for key, value in metrics.items():
            run.add_scalar(f"{prefix}/{key}", value, global_step=step or 0)

    def log_files(self, run, files: list[Path]) -> None:
        pass  # the run folder already holds metrics.json and predictions.csv beside the event files

    def end_run(self, run, status: str) -> None:
        if run != COMMAND_RUN:
            run.add_text("status", status)
            run.close()
