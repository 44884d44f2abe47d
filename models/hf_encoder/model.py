"""Fine-tuned Hugging Face encoders (BERT, RoBERTa, DeBERTa, ModernBERT...) with a sequence-classification head.

The ModelInterface methods live here; the training loop is ``loop.py`` (early stopping, progress and best weights
are callbacks in ``callbacks.py``), checkpoints and LoRA ``building.py``, the ONNX export ``models/onnx_encoder``.
Inference sorts rows by length, pads per batch and runs under ``torch.inference_mode`` with the training autocast.
The saved folder is a standard ``save_pretrained`` folder (safetensors, real label names in ``id2label``), so
``transformers.pipeline("text-classification", model=folder)`` loads it unchanged (but applies no temperature).
LoRA (PEFT) is configured with a ``peft`` block and saved merged (default) or as an adapter.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlops.core.callbacks import LoopState
from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface
from mlops.core.multilabel import is_label_sets
from mlops.core.text_dataset import TextDataset
from models.hf_common.arithmetic import legacy_torch_arithmetic, torch_arithmetic
from models.hf_common.batching import inference_batches, length_sorted_batches
from models.hf_common.calibration import calibrate_temperature
from models.hf_common.resolve import resolve_pretrained
from models.hf_common.training import (ThreadBudget, autocast, class_weight_vector, keep_freed_memory_for_reuse,
                                       log_truncation, quiet_transformers, resolve_precision, token_lengths)
from models.hf_common.truncation import head_tokens_for, tokenize
from models.hf_common.windows import Windows, hf_offsets
from models.hf_encoder.arguments import HFEncoderTrainingArguments
from models.hf_encoder.building import (clip_max_length, load_pretrained, load_saved, read_meta,
                                        set_activation_checkpointing, wrap_lora)
from models.hf_encoder.callbacks import encoder_callbacks
from models.hf_encoder.loop import EncoderTrainingLoop, TrainingData, TrainStep, distributed_world, wrap_distributed
from models.hf_encoder.recipe import plan_training
from models.hf_encoder.targets import (check_multi_label_arguments, check_pairs, encode_targets,
                                       multi_label_validation_score, text_columns)

logger = logging.getLogger(__name__)

META_FILE = "hf_encoder.json"
META_FORMAT = 1


class HFEncoderClassifier(ModelInterface):
    """``AutoModelForSequenceClassification`` fine-tuned with a lean loop; see the module docstring."""

    training_arguments_class = HFEncoderTrainingArguments
    training_arguments: HFEncoderTrainingArguments
    supports_multi_label = True  # a sigmoid per label, binary cross-entropy (targets.py)

    def __init__(self, config: ModelConfig, training_arguments: HFEncoderTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._model = None
        self._tokenizer = None
        self._device = "cpu"
        self._precision = "fp32"
        self._max_length = 128
        self._eval_batch_size = 64
        self._uses_pairs = self.multi_label = False
        self._save_mode: Literal["full", "lora_merged", "lora_adapter"] = "full"
        self._base_model_ref: str | None = None
        self._threads: ThreadBudget | None = None
        self.temperature = 1.0  # predictions are softmax(logits / temperature) (training_arguments.calibration)
        self._info: dict[str, Any] = {"truncated": {"train": 0, "validation": 0, "predict": 0}}

    # --- what the loop and the export read -------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def device(self) -> str:
        return self._device

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def uses_text_pairs(self) -> bool:
        return self._uses_pairs

    # --- setup -----------------------------------------------------------------------------------------------

    def _setup_runtime(self, device: str | None, args: HFEncoderTrainingArguments) -> None:
        from models.hf_common.device import pick_device

        _, local_rank, world = distributed_world()
        if world > 1 and device is None:
            import torch

            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self._device = pick_device(device)
        self._threads = ThreadBudget(args.num_threads)
        threads = self._threads.apply()
        self._precision, reason = resolve_precision(args.precision, self._device)
        self._max_length = args.max_length
        self._eval_batch_size = args.eval_batch_size
        self._info.update(device=self._device, precision=self._precision, precision_reason=reason,
                          truncation=args.truncation, torch_threads=threads,
                          thread_mode="adaptive" if self._threads.adaptive else "fixed")
        logger.info("device %s, precision %s (%s; set with training_arguments.precision), %d torch threads "
                    "(%s; set with training_arguments.num_threads)", self._device, self._precision, reason, threads,
                    "cores not busy with other processes, changing with the load" if self._threads.adaptive
                    else "as set" if args.num_threads else "this process's physical cores, fixed")

    def _build_model(self, args: HFEncoderTrainingArguments):
        resolved = resolve_pretrained(self.config.model_name)
        self._info["model_source"] = resolved.describe()
        self._base_model_ref = resolved.source if resolved.kind == "local" else resolved.name
        self._tokenizer, model = load_pretrained(resolved, self.labels, args, multi_label=self.multi_label)
        self._max_length = clip_max_length(self._tokenizer, args.max_length)
        self._save_mode = "full"
        if args.peft is not None:
            model, self._info["peft"] = wrap_lora(model, args.peft)
            self._save_mode = "lora_merged" if args.peft.save == "merged" else "lora_adapter"
        self._info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if args.gradient_checkpointing:
            set_activation_checkpointing(model, True)
        model.to(self._device)
        self._model = model
        return model

    def _finish(self, model, args: HFEncoderTrainingArguments, state: LoopState) -> None:
        if args.gradient_checkpointing:
            set_activation_checkpointing(model, False)
        if self._save_mode == "lora_merged":
            model = model.merge_and_unload()
        self._model = model.eval()
        history = state.history
        seconds = sum(record["seconds"] for record in history)
        self._info.update(state.info)  # what the callbacks report (mixup, supcon, embedding quality)
        self._info.update(
            epochs_run=len(history), best_epoch=state.best_epoch, stopped_early=len(history) < args.epochs,
            history=history, train_seconds=round(seconds, 3),
            train_samples_per_second=round(sum(r["samples_per_second"] * r["seconds"] for r in history) / seconds, 2),
            total_parameters=sum(p.numel() for p in model.parameters()),
            max_length=self._max_length, save_mode=self._save_mode,
        )

    def _validation_score(self, val: TextDataset, y_val: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        proba, truncated = self._predict(val)
        self._info["truncated"]["validation"] = truncated
        if self.multi_label:
            return multi_label_validation_score(proba, y_val)
        return float(f1_score(y_val, proba.argmax(axis=1), average="macro"))

    # --- encoding --------------------------------------------------------------------------------------------

    @property
    def head_tokens(self) -> int | None:
        """Tokens kept from the start of a longer single text under ``truncation: head_tail`` (None: head only)."""
        args = self.training_arguments
        return head_tokens_for(args.truncation, args.head_tokens, self._max_length)

    @property
    def windows(self) -> Windows | None:
        """``truncation: windows``: how long single texts are split and pooled (None: one cut per text)."""
        args = self.training_arguments
        return (Windows(hf_offsets(self._tokenizer), self._max_length, args.window_overlap, args.max_windows)
                if args.truncation == "windows" and not self._uses_pairs and self._tokenizer is not None else None)

    def encode(self, texts: list, pairs: list | None, idx: np.ndarray) -> dict:
        batch_pairs = None if pairs is None else [str(pairs[i]) for i in idx]
        encoded = tokenize(self._tokenizer, [str(texts[i]) for i in idx], batch_pairs, self._max_length,
                           self.head_tokens)
        return {key: value.to(self._device) for key, value in encoded.items()}

    # --- fit -------------------------------------------------------------------------------------------------

    def _prepare_fit(self, train: TextDataset, val: TextDataset | None, labels: Sequence[str]):
        """Check the data; return (texts, pairs, y, y_val or None)."""
        self._info = {"truncated": {"train": 0, "validation": 0, "predict": 0}}
        self.labels = [str(label) for label in labels]
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ModelError(f"a classifier needs at least two distinct labels, found {self.labels}.")
        if train.labels is None or len(train) == 0:
            raise ModelError("HFEncoderClassifier.fit needs labelled, non-empty training data.")
        texts, pairs = text_columns(train)
        self._uses_pairs = pairs is not None
        self.multi_label = is_label_sets(train.labels)
        if self.multi_label:
            check_multi_label_arguments(self.training_arguments)
        y = encode_targets(train.labels, self.labels, "training")
        y_val = None
        if val is not None and val.labels is not None and len(val) > 0:
            check_pairs(val, self._uses_pairs)
            y_val = encode_targets(val.labels, self.labels, "validation")
        return texts, pairs, y, y_val

    def fit(self, train: TextDataset, val: TextDataset | None = None, *, labels: Sequence[str],
            context: FitContext | None = None) -> HFEncoderClassifier:
        import torch

        context = context or FitContext()
        args = self.training_arguments
        texts, pairs, y, y_val = self._prepare_fit(train, val, labels)
        self._setup_runtime(context.device, args)
        self._info["freed_memory_reused"] = (
            args.reuse_freed_memory and self._device == "cpu" and keep_freed_memory_for_reuse())
        self._info["tf32"] = args.tf32 and self._device.startswith("cuda")
        if self._device.startswith("cuda"):  # process-wide, so set either way
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
        torch.manual_seed(context.seed)
        rng = np.random.default_rng(context.seed)
        model = self._build_model(args)
        if (windows := self.windows) is not None:  # every window of a long text trains with the text's label
            texts, y, self._info["windows"] = windows.training_rows(texts, y)
        lengths, truncated = token_lengths(self._tokenizer, texts, pairs, self._max_length)
        self._info["truncated"]["train"] = truncated
        log_truncation("training", truncated, len(texts), self._max_length, windows=windows is not None)
        rank, _, world = distributed_world()
        args, self._info["recipe"] = plan_training(args, self.labels, y, world)
        weights = class_weight_vector(args.class_weight, self.labels, y)
        if weights is not None:
            logger.info("class weights: %s", {label: round(float(w), 4) for label, w in zip(self.labels, weights)})
        train_model = model
        if world > 1:  # data parallel: same seeded batch plan on every rank, each trains on its share
            train_model = wrap_distributed(model, self._device, rank, world)
            self._info["distributed"] = {"world_size": world}
        n_batches = math.ceil(len(texts) / args.batch_size)
        step = TrainStep(train_model, args, device=self._device, precision=self._precision,
                         n_batches=n_batches // world if world > 1 else n_batches, class_weights=weights)
        use_val = y_val is not None and (args.epochs > 1 or args.supcon is not None)  # one epoch: nothing to choose
        if not use_val:
            logger.info("training all %d epochs without validation scores (%s)", args.epochs, "no validation data"
                        if y_val is None else "one epoch: no epoch to choose or stop at")
        logger.info("fine-tuning on %d rows: %d epochs x %d batches of %d (gradient accumulation %d), lr %g",
                    len(texts), args.epochs, step.n_batches, args.batch_size, args.gradient_accumulation_steps,
                    args.learning_rate)
        loop = EncoderTrainingLoop(step, encode=self.encode, device=self._device, precision=self._precision,
                                   threads=self._threads, callbacks=encoder_callbacks(
                                       args, context, model, use_val, labels=self.labels, class_weights=step.class_weights,
                                       embed_validation=(lambda: (self.embed(val), y_val)) if use_val else None),
                                   min_delta=args.early_stopping_min_delta)
        loop.monitor_name = "micro-F1" if self.multi_label else "macro-F1"
        state = LoopState(model=model, epochs=args.epochs, batches_per_epoch=step.n_batches, rows=len(texts),
                          labels=list(self.labels))
        loop.run(state, TrainingData(texts, pairs, y, lengths), rng,
                 (lambda: self._validation_score(val, y_val)) if use_val else None, rank=rank, world=world)
        self._info["torch_threads_used"] = sorted(self._threads.used)
        self._finish(model, args, state)
        if args.calibration == "temperature":  # validation logits of the best epoch's weights, as predicted
            logits = None if y_val is None else self._predict(val, logits_only=True)[0]
            self.temperature, self._info["calibration"] = calibrate_temperature(logits, y_val)
        return self

    # --- predict ---------------------------------------------------------------------------------------------

    def fitted_module(self):
        """The trained torch module (``ModelError`` before fit or load)."""
        if self._model is None or self._tokenizer is None:
            raise ModelError("the model is not trained yet: call fit() or load() first.")
        return self._model

    def _predict(self, data: TextDataset, temperature: float | None = None, *,
                 logits_only: bool = False) -> tuple[np.ndarray, int]:
        """Scores of ``data`` and how many texts were cut; under windows, the windows' pooled per text."""
        windows = self.windows
        if windows is None or not len(data):
            return self._predict_rows(data, temperature, logits_only=logits_only)
        texts, owner, cut = windows.split(list(data.texts))
        scores = self._predict_rows(TextDataset(texts), temperature, logits_only=logits_only)[0]
        kind = "logits" if logits_only else "sigmoid" if self.multi_label else "softmax"
        return windows.pool(scores, owner, len(data), kind=kind), cut

    def _predict_rows(self, data: TextDataset, temperature: float | None = None, *,
                      logits_only: bool = False) -> tuple[np.ndarray, int]:
        import torch

        model = self.fitted_module()
        check_pairs(data, self._uses_pairs)
        out = np.empty((len(data), len(self.labels)), dtype=np.float64)
        if len(data) == 0:
            return out, 0
        texts, pairs = text_columns(data)
        lengths, truncated = token_lengths(self._tokenizer, texts, pairs, self._max_length)
        scale = self.temperature if temperature is None else temperature  # logits_only: the logits, unscaled
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for idx in inference_batches(lengths, self._eval_batch_size, self._device):
                inputs = self.encode(texts, pairs, idx)
                with autocast(self._device, self._precision):
                    logits = model(**inputs).logits.float()
                out[idx] = (logits if logits_only else torch.sigmoid(logits) if self.multi_label
                            else torch.softmax(logits / scale, dim=-1)).cpu().numpy()
        model.train(was_training)
        return out, truncated

    def embed(self, data: TextDataset) -> np.ndarray:
        """Mean-pooled, L2-normalised last hidden states of ``data`` (n, hidden), as sentence-transformers pools."""
        from models.hf_encoder.objectives import pooled_embeddings

        texts, pairs = text_columns(data)
        lengths, _ = token_lengths(self._tokenizer, texts, pairs, self._max_length)
        return pooled_embeddings(self.fitted_module(), lambda idx: self.encode(texts, pairs, idx),
                                 length_sorted_batches(lengths, self._eval_batch_size), len(texts),
                                 lambda: autocast(self._device, self._precision))

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if self._threads is not None and len(data):
            self._threads.apply()
        proba, truncated = self._predict(data)
        self._info["truncated"]["predict"] += truncated
        if truncated:  # info, not warning: predict-new calls this once per chunk of a large file
            logger.info("%d of %d input texts are longer than max_length=%d tokens and were truncated",
                        truncated, len(data), self._max_length)
        return proba

    def predict_proba_uncalibrated(self, data: TextDataset) -> np.ndarray:
        """Probabilities before temperature scaling (T = 1), for metrics_uncalibrated; truncation is not counted."""
        return self._predict(data, temperature=1.0)[0]

    def predict_fp32(self, data: TextDataset) -> np.ndarray:
        """Calibrated probabilities without autocast (the reference an export is checked against)."""
        saved, self._precision = self._precision, "fp32"
        try:
            return self._predict(data)[0]
        finally:
            self._precision = saved

    # --- save / load -----------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        model = self.fitted_module()
        directory = Path(directory)
        # pipeline(..., truncation=True) then truncates where predict_proba does.
        self._tokenizer.model_max_length = self._max_length
        if self._save_mode == "lora_adapter":
            model.peft_config["default"].base_model_name_or_path = self._base_model_ref
        with quiet_transformers():
            model.save_pretrained(directory)
            self._tokenizer.save_pretrained(directory)
        meta = {"format": META_FORMAT, "labels": self.labels, "max_length": self._max_length,
                "uses_text_pairs": self._uses_pairs, "save_mode": self._save_mode, "base_model": self._base_model_ref,
                "trained_precision": self._info.get("precision"), "model_source": self._info.get("model_source"),
                "calibration": self._info.get("calibration"), "multi_label": self.multi_label}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def arithmetic(cls, arguments: HFEncoderTrainingArguments, device: str | None,
                   runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        return legacy_torch_arithmetic(runtime) if runtime is not None else torch_arithmetic(
            arguments.num_threads, arguments.precision, device)

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> HFEncoderClassifier:
        directory = Path(directory)
        meta = read_meta(directory, META_FILE, META_FORMAT, cls.__name__)
        loaded = cls(config)
        args = loaded.training_arguments
        loaded.labels = list(meta["labels"])
        loaded._uses_pairs = bool(meta["uses_text_pairs"])
        loaded._save_mode = meta["save_mode"]
        loaded._base_model_ref = meta.get("base_model")
        loaded._setup_runtime(device, args)
        loaded._max_length = int(meta["max_length"])
        k = len(loaded.labels)
        loaded._tokenizer, model = load_saved(directory, loaded.labels, loaded._save_mode, loaded._base_model_ref,
                                              args)
        id2label = [model.config.id2label[i] for i in range(k)] if model.config.num_labels == k else None
        if id2label != loaded.labels:
            raise ModelError(f"{directory}: config.json labels {id2label} do not match {META_FILE} labels "
                             f"{loaded.labels}; the folder was modified after saving.")
        loaded._model = model.to(loaded._device).eval()
        loaded.multi_label = bool(meta.get("multi_label"))  # a LoRA adapter's base config does not say
        loaded._info.update(max_length=loaded._max_length, save_mode=loaded._save_mode,
                            model_source=meta.get("model_source"))
        if meta.get("calibration"):  # folders saved without calibration keep T = 1
            loaded._info["calibration"] = meta["calibration"]
            loaded.temperature = float(meta["calibration"]["temperature"])
        return loaded

    def export_onnx(self, directory: Path, *, precision: str, calibration: TextDataset, check: TextDataset,
                    min_agreement: float) -> dict[str, Any]:
        """fp32 or checked int8 ONNX Runtime export, loaded by ``models.onnx_encoder.model`` (see export.py)."""
        from models.onnx_encoder.export import export_encoder_onnx

        return export_encoder_onnx(self, directory, precision=precision, calibration=calibration, check=check,
                                   min_agreement=min_agreement)

    def runtime_info(self) -> dict[str, Any]:
        info = dict(self._info)
        info["truncated"] = dict(self._info["truncated"])
        return info
