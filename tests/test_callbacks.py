"""The training-callback protocol: the encoder loop notifies extra callbacks, and the loss hook shapes training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.hf import build_tiny_bert, topic_data
from mlops.core.callbacks import CallbackList, LoopState, TrainingCallback
from mlops.core.config import ModelConfig
from mlops.core.model_interface import FitContext
from mlops.core.text_dataset import TextDataset

LABELS = ["sports", "tech", "food"]
TEXTS, TARGETS = topic_data(96, seed=3)
TRAIN, VAL = TextDataset(TEXTS[:72], TARGETS[:72]), TextDataset(TEXTS[72:], TARGETS[72:])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert") / "model")


def _encoder(base: Path, **args):
    from models.hf_encoder.model import HFEncoderClassifier

    arguments = {"epochs": 3, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0, "max_length": 16,
                 "num_threads": 1, "precision": "fp32", **args}
    return HFEncoderClassifier(ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                                           model_name=str(base), training_arguments=arguments))


class Recorder(TrainingCallback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.epoch_records: list[dict] = []
        self.batches = 0

    def on_fit_start(self, state: LoopState) -> None:
        self.events.append("start")

    def on_batch_end(self, state, batch) -> None:
        self.batches += 1

    def on_epoch_end(self, state: LoopState) -> None:
        self.events.append(f"epoch{state.epoch}")
        self.epoch_records.append(dict(state.history[-1]))

    def on_fit_end(self, state: LoopState) -> None:
        self.events.append("failed" if state.failed else "end")


def test_extra_callbacks_from_the_context_see_every_epoch(tiny_bert):
    recorder = Recorder()
    model = _encoder(tiny_bert, early_stopping_patience=None).fit(
        TRAIN, VAL, labels=LABELS, context=FitContext(seed=0, show_progress=False, callbacks=[recorder]))
    assert recorder.events == ["start", "epoch1", "epoch2", "epoch3", "end"]
    assert recorder.batches == 3 * 5  # 72 rows in batches of 16
    assert [r["epoch"] for r in recorder.epoch_records] == [1, 2, 3]
    assert all("validation_f1_macro" in r and r["train_loss"] > 0 for r in recorder.epoch_records)
    assert model.runtime_info()["history"] == recorder.epoch_records


class StopAfterFirstEpoch(TrainingCallback):
    def on_epoch_end(self, state: LoopState) -> None:
        state.stop = True


def test_a_callback_can_stop_training(tiny_bert):
    model = _encoder(tiny_bert, early_stopping_patience=None, epochs=4).fit(
        TRAIN, VAL, labels=LABELS, context=FitContext(seed=0, show_progress=False, callbacks=[StopAfterFirstEpoch()]))
    assert model.runtime_info()["epochs_run"] == 1
    assert model.runtime_info()["stopped_early"] is True


class ScaledLoss(TrainingCallback):
    """An extra objective through the loss hook: here, the loss times a factor (0 freezes training)."""

    needs_hidden_states = True

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.saw_hidden_states = False

    def batch_loss(self, state, batch, loss):
        self.saw_hidden_states = batch.outputs.hidden_states is not None
        return loss * self.factor


def test_the_loss_hook_changes_what_is_optimised(tiny_bert):
    def fit(*callbacks):
        return _encoder(tiny_bert, early_stopping_patience=None, max_grad_norm=None).fit(
            TRAIN, None, labels=LABELS, context=FitContext(seed=0, show_progress=False, callbacks=list(callbacks)))

    plain = fit().predict_proba(VAL)
    frozen_hook = ScaledLoss(0.0)
    frozen = fit(frozen_hook)
    assert frozen_hook.saw_hidden_states
    assert np.abs(frozen.predict_proba(VAL) - plain).max() > 1e-3
    assert frozen.runtime_info()["history"][-1]["train_loss"] == 0.0
    assert np.array_equal(fit(ScaledLoss(1.0)).predict_proba(VAL), plain)  # identity hook: same numbers


def test_callback_list_threads_the_loss_and_ends_every_callback():
    class Fails(TrainingCallback):
        def on_fit_end(self, state):
            raise RuntimeError("boom")

    ended = Recorder()
    callbacks = CallbackList([ScaledLoss(2.0), ScaledLoss(3.0), Fails(), ended])
    state = LoopState(model=None, epochs=1, batches_per_epoch=1, rows=1, labels=["a", "b"])
    batch = type("B", (), {"outputs": type("O", (), {"hidden_states": None})()})()
    assert callbacks.batch_loss(state, batch, 1.0) == 6.0
    assert callbacks.needs_hidden_states
    with pytest.raises(RuntimeError, match="boom"):
        callbacks.on_fit_end(state)
    assert ended.events == ["end"]  # ran although an earlier callback raised


def test_the_runner_hands_its_callbacks_to_every_fit(tmp_path):
    from mlops.experiments.service import ExperimentService
    from mlops.experiments.runner import ExperimentRunner

    recorder = Recorder()
    runner = ExperimentRunner(ExperimentService(tmp_path), callbacks=[recorder])
    context = runner._context(seed=1, work_dir=tmp_path)
    assert context.callbacks == [recorder] and context.seed == 1


def test_progress_off_a_terminal_is_a_log_line_each_tenth_not_a_redrawn_bar(caplog, capsys):
    """In a CI log or under nohup, a bar redrawn every second fills the file; a line per tenth does not."""
    import logging

    from models.hf_encoder.callbacks import ProgressBar

    bar = ProgressBar()
    state = LoopState(model=None, epochs=2, batches_per_epoch=50, rows=1600, labels=["a", "b"])
    with caplog.at_level(logging.INFO, logger="models.hf_encoder.callbacks"):
        bar.on_fit_start(state)
        for _ in range(100):
            bar.on_batch_end(state, None)
        bar.on_fit_end(state)
    lines = [r.getMessage() for r in caplog.records if "batches" in r.getMessage()]
    assert len(lines) == 10 and lines[-1].startswith("fine-tuning: 100 of at most 100 batches")
    assert "batch/s" not in capsys.readouterr().err  # no tqdm bar
