"""The encoder loop's own callbacks: best-weight keeping, early stopping and the progress bar; and
``encoder_callbacks``, which puts together those a fit runs (with the extra objectives of ``objectives.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

from mlops.core.callbacks import CallbackList, LoopState, TrainingBatch, TrainingCallback
from models.hf_common.training import BestWeights, trainable_bytes

logger = logging.getLogger(__name__)

#: Above this many bytes of trainable weights, the best epoch's copy goes to work_dir instead of memory.
MEMORY_COPY_LIMIT = 1 << 30


def best_weights_dir(storage: str, work_dir: Path | None, model) -> Path | None:
    if storage == "auto":
        storage = "work_dir" if trainable_bytes(model) > MEMORY_COPY_LIMIT else "memory"
    if storage == "work_dir":
        if work_dir is not None:
            return Path(work_dir) / "hf_encoder_best"
        logger.info("no work_dir given: keeping the best epoch's weights in memory")
    return None


def encoder_callbacks(args, context, model, use_val: bool, *, labels: list[str], class_weights,
                      embed_validation) -> CallbackList:
    """Extra objectives (MixUp, SupCon), then best weights and early stopping (with validation), the progress
    bar, and last the runner's callbacks (tracking)."""
    from models.hf_encoder.objectives import EmbeddingMixUp, SupervisedContrastive

    own: list[TrainingCallback] = []
    if args.mixup is not None:
        own.append(EmbeddingMixUp(args.mixup.alpha, args.mixup.ratio, len(labels), context.seed, class_weights))
    if args.supcon is not None:
        own.append(SupervisedContrastive(args.supcon.weight, args.supcon.temperature, args.supcon.k,
                                         embed_validation if use_val else None))
    if use_val:  # BestWeightKeeper before SupCon's on_fit_end, so the embeddings are the best epoch's
        own = [BestWeightKeeper(best_weights_dir(args.best_weights_storage, context.work_dir, model),
                                args.early_stopping_min_delta), EarlyStopping(args.early_stopping_patience), *own]
    return CallbackList([*own, ProgressBar(context.show_progress), *context.callbacks])


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
    """A tqdm bar over every batch of the run on a terminal; where stderr is a file or a pipe (CI logs, nohup),
    a log line each tenth of the run instead of a bar redrawn every second. Hidden when ``enabled`` is False."""

    def __init__(self, enabled: bool = True, description: str = "fine-tuning") -> None:
        self.enabled = enabled
        self.description = description
        self._bar = None
        self._done = self._total = self._next_line = 0

    def on_fit_start(self, state: LoopState) -> None:
        import sys

        from tqdm.auto import tqdm

        self._total, self._done = state.batches_per_epoch * state.epochs, 0
        self._next_line = max(1, self._total // 10)
        if self.enabled and sys.stderr.isatty():
            self._bar = tqdm(total=self._total, desc=self.description, unit="batch", leave=False, mininterval=1.0)

    def on_batch_end(self, state: LoopState, batch: TrainingBatch) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled and self._done >= self._next_line:
            logger.info("%s: %d of at most %d batches (epoch %d)", self.description, self._done, self._total,
                        state.epoch)
            self._next_line += max(1, self._total // 10)

    def on_fit_end(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.close()
