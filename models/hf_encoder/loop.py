"""The encoder's training loop: epochs of length-grouped batches, with callbacks for everything else.

A lean loop of our own rather than ``transformers.Trainer``: the Trainer's early stopping needs a full
checkpoint (with optimizer state) on disk at every evaluation, its length grouping tokenizes the whole
data set up front, and importing it costs seconds. This loop tokenizes per batch (length-grouped, dynamic
padding), runs under bf16 autocast where the CPU or GPU has it, validates once per epoch, keeps the best
epoch's trainable weights (in memory, or one scratch file for very large models), uses fused AdamW and
sets torch threads to the cores other processes leave free.

The loop owns the arithmetic (optimizer, schedule, loss scaling, gradient accumulation and clipping)
and the per-epoch record; early stopping, best-weight keeping, the progress bar and anything the
runner adds (tracking) are ``mlops.core.callbacks.TrainingCallback`` objects, and an extra objective
changes a batch's loss through the ``batch_loss`` hook. See ``mlops/core/callbacks.py`` for the order.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlops.core.callbacks import CallbackList, LoopState, TrainingBatch
from models.hf_common.batching import length_grouped_batches, random_batches
from models.hf_common.training import ThreadBudget, autocast
from models.hf_encoder.arguments import HFEncoderTrainingArguments

logger = logging.getLogger(__name__)

#: How often training re-checks how many cores other processes leave free (see ThreadBudget).
THREAD_CHECK_SECONDS = 10.0
MONITOR = "validation_f1_macro"


def distributed_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) of a torchrun / accelerate launch; (0, 0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def wrap_distributed(model, device: str, rank: int, world: int):
    """``model`` under DistributedDataParallel (joining the process group first)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    logger.info("distributed training: rank %d of %d trains on 1/%d of each epoch's batches", rank, world, world)
    return DistributedDataParallel(
        model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)


def rank_share(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """This rank's batches: every rank gets the same number (DDP needs it), interleaved so lengths stay mixed."""
    usable = len(batches) - len(batches) % world
    return batches[rank:usable:world]


@dataclass
class TrainingData:
    """The training rows as the loop needs them: texts, optional pairs, class indices and token lengths."""

    texts: list
    pairs: list | None
    y: np.ndarray
    lengths: np.ndarray


class TrainStep:
    """The optimizer, schedule and loss of one fit."""

    def __init__(self, model, args: HFEncoderTrainingArguments, *, device: str, precision: str, n_batches: int,
                 class_weights: np.ndarray | None) -> None:
        import torch
        from transformers import get_scheduler

        self.model, self.args, self.n_batches = model, args, n_batches
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in self.trainable if p.ndim >= 2], "weight_decay": args.weight_decay},
            {"params": [p for p in self.trainable if p.ndim < 2], "weight_decay": 0.0},  # biases and norms
        ]
        try:  # the fused kernel is several times faster than the default on CPU and GPU
            self.optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, fused=True)
        except (RuntimeError, TypeError):
            self.optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
        total_updates = math.ceil(n_batches / args.gradient_accumulation_steps) * args.epochs
        self.scheduler = get_scheduler(args.scheduler, self.optimizer, num_training_steps=total_updates,
                                       num_warmup_steps=round(args.warmup_ratio * total_updates))
        self.scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16")
        self.class_weights = None if class_weights is None else torch.tensor(
            class_weights, dtype=torch.float32, device=device)

    def loss(self, logits, targets):
        import torch.nn.functional as F

        if targets.is_floating_point():  # label sets: a sigmoid per label; class_weights weigh positives
            return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=self.class_weights)
        return F.cross_entropy(logits.float(), targets, weight=self.class_weights,
                               label_smoothing=self.args.label_smoothing)

    def backward(self, loss, i: int, n: int) -> None:
        """Back-propagate batch ``i`` of ``n`` (from 1); step the optimizer at accumulation boundaries."""
        import torch

        args = self.args
        self.scaler.scale(loss / args.gradient_accumulation_steps).backward()
        if i % args.gradient_accumulation_steps == 0 or i == n:
            if args.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, args.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)


class EncoderTrainingLoop:
    """Runs the epochs of one fit and notifies ``callbacks``; ``validate`` scores an epoch (None: no val)."""

    def __init__(self, step: TrainStep, *, encode: Callable, device: str, precision: str, threads: ThreadBudget,
                 callbacks: CallbackList, min_delta: float = 0.0) -> None:
        self.step, self.encode, self.device, self.precision = step, encode, device, precision
        self.threads, self.callbacks, self.min_delta = threads, callbacks, min_delta
        self.monitor_name = "macro-F1"  # label sets: "micro-F1" (of the labels at 0.5)

    def _autocast(self):
        return autocast(self.device, self.precision)

    def _epoch(self, state: LoopState, batches: list[np.ndarray], data: TrainingData, y) -> float:
        """Train on ``batches`` (row indices); return the mean training loss."""
        import torch

        model, step = self.step.model, self.step
        model.train()
        step.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        hidden = self.callbacks.needs_hidden_states
        checked = time.perf_counter()
        for i, idx in enumerate(batches, 1):
            if time.perf_counter() - checked > THREAD_CHECK_SECONDS:
                self.threads.apply()
                checked = time.perf_counter()
            inputs = self.encode(data.texts, data.pairs, idx)
            targets = y[idx].to(self.device)
            with self._autocast():
                outputs = model(**inputs, output_hidden_states=True) if hidden else model(**inputs)
            batch = TrainingBatch(indices=idx, inputs=inputs, targets=targets, outputs=outputs,
                                  autocast=self._autocast)
            loss = self.callbacks.batch_loss(state, batch, step.loss(outputs.logits, targets))
            step.backward(loss, i, len(batches))
            loss_sum += loss.detach() * len(idx)
            self.callbacks.on_batch_end(state, batch)
        return float(loss_sum) / sum(len(idx) for idx in batches)

    def _end_epoch(self, state: LoopState, record: dict, validate: Callable[[], float] | None) -> None:
        if validate is not None:
            score = record[MONITOR] = validate()
            state.improved = score > state.best_score + self.min_delta
            if state.improved:
                state.best_epoch, state.best_score = state.epoch, score
        state.history.append(record)
        args = self.step.args
        logger.info("epoch %d/%d: train loss %.4f, %s%.1f samples/s", state.epoch, args.epochs, record["train_loss"],
                    f"validation {self.monitor_name} {record[MONITOR]:.4f} (best {state.best_score:.4f} at epoch "
                    f"{state.best_epoch}), " if validate is not None else "", record["samples_per_second"])
        self.callbacks.on_epoch_end(state)

    def run(self, state: LoopState, data: TrainingData, rng: np.random.Generator,
            validate: Callable[[], float] | None, *, rank: int = 0, world: int = 1) -> LoopState:
        import torch

        args = self.step.args
        state.monitor = MONITOR if validate is not None else None
        y = torch.from_numpy(data.y)
        self.callbacks.on_fit_start(state)
        try:
            for epoch in range(1, args.epochs + 1):
                state.epoch = epoch
                if args.group_by_length:
                    batches = length_grouped_batches(data.lengths, args.batch_size, rng)
                else:
                    batches = random_batches(len(data.texts), args.batch_size, rng)
                if world > 1:
                    batches = rank_share(batches, rank, world)
                started = time.perf_counter()
                loss = self._epoch(state, batches, data, y)
                seconds = time.perf_counter() - started
                record = {"epoch": epoch, "train_loss": loss, "seconds": seconds,
                          "samples_per_second": len(data.texts) / seconds, "torch_threads": self.threads.threads}
                self._end_epoch(state, record, validate)
                if state.stop:
                    break
        except BaseException:
            state.failed = True
            raise
        finally:
            self.callbacks.on_fit_end(state)
        return state
