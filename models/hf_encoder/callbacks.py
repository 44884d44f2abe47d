"""The encoder loop's own callbacks: best-weight keeping, early stopping and the progress bar."""

from __future__ import annotations

import logging
from pathlib import Path

from mlops.callbacks import LoopState, TrainingBatch, TrainingCallback
from models.hf_common.training import BestWeights

logger = logging.getLogger(__name__)


class BestWeightKeeper(TrainingCallback):
    """Copies the trainable weights of each new best epoch; at the end puts the best ones back.

    The copy is kept in memory, or in ``scratch_dir`` (the runner's work_dir) for very large models.
    """

    def __init__(self, scratch_dir: Path | None = None, min_delta: float = 0.0) -> None:
        self.best = BestWeights(scratch_dir)
        self.min_delta = min_delta

    def on_epoch_end(self, state: LoopState) -> None:
        score = state.history[-1].get(state.monitor) if state.monitor else None
        if score is not None:
            self.best.update(state.model, state.epoch, score, self.min_delta)

    def on_fit_end(self, state: LoopState) -> None:
        try:
            if not state.failed and self.best.epoch is not None and self.best.epoch != state.history[-1]["epoch"]:
                self.best.restore(state.model)
                logger.info("restored the weights of epoch %d (validation macro-F1 %.4f)", self.best.epoch,
                            self.best.score)
        finally:
            self.best.discard()


class EarlyStopping(TrainingCallback):
    """Stops training after ``patience`` epochs without a new best validation score."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.left = patience

    def on_epoch_end(self, state: LoopState) -> None:
        if self.patience is None or state.monitor is None:
            return
        self.left = self.patience if state.improved else self.left - 1
        if self.left <= 0 and state.epoch < state.epochs:
            state.stop = True
            state.stop_reason = f"no validation macro-F1 gain for {self.patience} epochs"
            logger.info("early stopping after epoch %d: no validation macro-F1 gain for %d epochs "
                        "(set with training_arguments.early_stopping_patience)", state.epoch, self.patience)


class ProgressBar(TrainingCallback):
    """A tqdm bar over every batch of the run (hidden when ``enabled`` is False)."""

    def __init__(self, enabled: bool = True, description: str = "fine-tuning") -> None:
        self.enabled = enabled
        self.description = description
        self._bar = None

    def on_fit_start(self, state: LoopState) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=state.batches_per_epoch * state.epochs, desc=self.description, unit="batch",
                         disable=not self.enabled, leave=False, mininterval=1.0)

    def on_batch_end(self, state: LoopState, batch: TrainingBatch) -> None:
        self._bar.update(1)

    def on_fit_end(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.close()
