"""The training-callback protocol: what a model's training loop tells the code that watches or shapes it.

A loop (``models/hf_encoder/loop.py`` is the reference) calls, in order:

* ``on_fit_start(state)`` once, before the first batch;
* per batch, ``batch_loss(state, batch, loss)``, which returns the loss to optimise (an extra objective
  such as embedding MixUp or a supervised contrastive term adds to it here), then ``on_batch_end``;
* ``on_epoch_end(state)`` after each epoch's record (train loss, validation score...) is appended to
  ``state.history``; a callback may set ``state.stop`` to end training early;
* ``on_fit_end(state)`` once, also when training failed (``state.failed``), so resources are released.

Callbacks come from the model itself (early stopping, progress, best weights) and from the runner
through ``FitContext.callbacks`` (tracking). Every method is optional: subclass and override.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """What a training loop shares with its callbacks; callbacks may read everything and set ``stop``."""

    model: Any  # the module being trained
    epochs: int  # the most epochs the loop will run
    batches_per_epoch: int
    rows: int  # training rows
    labels: list[str]
    epoch: int = 0  # the epoch running or just finished, from 1
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    monitor: str | None = None  # the history key that measures improvement (None: no validation)
    best_epoch: int | None = None
    best_score: float = float("-inf")
    improved: bool = False  # whether the last epoch set a new best
    stop: bool = False
    stop_reason: str | None = None
    failed: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # facts callbacks add to the run's manifest


@dataclass
class TrainingBatch:
    """One training batch, as the loss hook sees it."""

    indices: Any  # row numbers into the training set
    inputs: dict[str, Any]  # the model's keyword inputs (input_ids, attention_mask...)
    targets: Any  # class indices
    outputs: Any  # the model's output (logits; hidden_states when a callback asked for them)
    autocast: Callable[[], AbstractContextManager]  # the precision context the forward pass ran under


class TrainingCallback:
    """Base class: override the hooks you need. ``needs_hidden_states`` asks the loop for hidden states."""

    needs_hidden_states: bool = False

    def on_fit_start(self, state: LoopState) -> None:
        pass

    def batch_loss(self, state: LoopState, batch: TrainingBatch, loss: Any) -> Any:
        return loss

    def on_batch_end(self, state: LoopState, batch: TrainingBatch) -> None:
        pass

    def on_epoch_end(self, state: LoopState) -> None:
        pass

    def on_fit_end(self, state: LoopState) -> None:
        pass


class CallbackList(TrainingCallback):
    """Several callbacks notified in order; ``batch_loss`` threads the loss through each of them."""

    def __init__(self, callbacks: Iterable[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)
        self.needs_hidden_states = any(c.needs_hidden_states for c in self.callbacks)
        self._loss_hooks = [c for c in self.callbacks if type(c).batch_loss is not TrainingCallback.batch_loss]

    def on_fit_start(self, state: LoopState) -> None:
        for callback in self.callbacks:
            callback.on_fit_start(state)

    def batch_loss(self, state: LoopState, batch: TrainingBatch, loss: Any) -> Any:
        for callback in self._loss_hooks:
            loss = callback.batch_loss(state, batch, loss)
        return loss

    def on_batch_end(self, state: LoopState, batch: TrainingBatch) -> None:
        for callback in self.callbacks:
            callback.on_batch_end(state, batch)

    def on_epoch_end(self, state: LoopState) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(state)

    def on_fit_end(self, state: LoopState) -> None:
        """Every callback's ``on_fit_end`` runs even if an earlier one raises; the first error is re-raised."""
        error: BaseException | None = None
        for callback in self.callbacks:
            try:
                callback.on_fit_end(state)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others have run
                error = error or exc
        if error is not None:
            raise error
