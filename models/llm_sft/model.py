"""A causal LM fine-tuned with a LoRA adapter (TRL ``SFTTrainer``) to answer each prompt with its label.

Training rows are ``prompt(text) + label_prefix + label + EOS``, tokenized exactly as prediction
tokenizes them, with the loss on the answer only. Prediction scores every label's log-likelihood
(as the prompted classifier does), so every row gets a label and probabilities. ``save`` writes the
LoRA adapter as safetensors (``adapter/``) plus ``llm_sft.json`` naming the base model, labels and
template; ``load`` rebuilds the base model by name and attaches the adapter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, TrainingArguments
from mlops.core.text_dataset import TextDataset
from models.llm_prompt.model import LlmPromptClassifier
from models.llm_prompt.prompting import PromptTemplate, prompt_inputs

logger = logging.getLogger(__name__)

STATE_FILE = "llm_sft.json"
ADAPTER_DIR = "adapter"


class SftTrainingArguments(TrainingArguments):
    template: PromptTemplate = Field(
        default_factory=lambda: PromptTemplate(instruction="Classify the sentiment of the movie review as one of: {labels}.")
    )
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, description="stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float = Field(default=2e-4, gt=0)
    per_device_batch_size: int = Field(default=8, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_length: int = Field(default=128, gt=8, description="tokens per training row (prompt + answer)")
    max_train_rows: int | None = Field(default=None, gt=0, description="subsample train to this many rows")
    lora_r: int = Field(default=8, gt=0)
    lora_alpha: int = Field(default=16, gt=0)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    gradient_checkpointing: bool = False
    logging_steps: int = Field(default=10, gt=0)
    # prediction
    length_normalize: bool = True
    batch_size: int = Field(default=16, gt=0)
    max_text_tokens: int = Field(default=256, gt=8)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # the prompted classifier's knobs, fixed here: no few-shot examples, no calibration
    shots_per_label: Literal[0] = 0
    calibration: Literal["none"] = "none"


class LlmSftClassifier(LlmPromptClassifier):
    """LoRA-fine-tuned causal LM that answers with the label; labels scored by log-likelihood."""

    training_arguments_class = SftTrainingArguments
    state_file = STATE_FILE

    def __init__(self, config: ModelConfig, training_arguments: SftTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self.train_log: list[dict[str, Any]] = []

    def _training_rows(self, texts: list[str], labels: list[str]) -> list[dict[str, list[int]]]:
        from models.llm_prompt.scoring import label_token_ids

        prompt = self._render()
        tok = self._tokenizer
        prefix_ids = tok(prompt.prefix, add_special_tokens=not prompt.prefix_has_special_tokens)["input_ids"]
        tail_ids = tok(prompt.suffix(""), add_special_tokens=False)["input_ids"]
        answers = dict(zip(self.labels, label_token_ids(tok, self.labels, prompt.label_prefix), strict=True))
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        rows = []
        for text, label in zip(texts, labels, strict=True):
            answer = answers[label] + eos
            body = tok(prompt.suffix(text), add_special_tokens=False)["input_ids"]
            room = self.args.max_length - len(prefix_ids) - len(answer)
            if room < len(tail_ids) + 1:
                raise ModelError(
                    f"max_length={self.args.max_length} leaves no room for the text after the prompt "
                    f"({len(prefix_ids)} tokens) and answer; raise training_arguments.max_length."
                )
            if len(body) > room:
                body = body[: room - len(tail_ids)] + tail_ids
            ids = prefix_ids + body
            rows.append({"input_ids": ids + answer, "labels": [-100] * len(ids) + answer})
        return rows

    def fit(
        self,
        train: TextDataset,
        val: TextDataset | None = None,
        *,
        labels: Sequence[str],
        context: FitContext | None = None,
    ) -> LlmSftClassifier:
        context = context or FitContext()
        if train.labels is None:
            raise ModelError("LlmSftClassifier.fit needs labelled training data.")
        self.labels = list(labels)
        unknown = set(map(str, train.labels)) - set(self.labels)
        if unknown:
            raise ModelError(f"training labels {sorted(unknown)} are not in the label set {self.labels}.")
        texts, ys = prompt_inputs(train), [str(y) for y in train.labels]
        if self.args.max_train_rows is not None and len(texts) > self.args.max_train_rows:
            keep = sorted(random.Random(context.seed).sample(range(len(texts)), self.args.max_train_rows))
            texts, ys = [texts[i] for i in keep], [ys[i] for i in keep]
            logger.info("training on %d of %d rows (set with max_train_rows)", len(texts), len(train))
        self._device = context.device
        self._ensure_model()
        self._prompt = None
        self._train(texts, ys, context)
        return self

    def _train(self, texts: list[str], ys: list[str], context: FitContext) -> None:
        import tempfile

        import torch
        from datasets import Dataset
        from peft import LoraConfig, get_peft_model
        from transformers import set_seed
        from trl import SFTConfig, SFTTrainer

        args = self.args
        set_seed(context.seed)
        rows = self._training_rows(texts, ys)
        dataset = Dataset.from_list(rows)
        lora = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules, task_type="CAUSAL_LM",
        )
        model = get_peft_model(self._model, lora)
        on_cuda = str(self._device).startswith("cuda")
        dtype = next(model.parameters()).dtype
        scratch = tempfile.TemporaryDirectory(prefix="llm_sft_") if context.work_dir is None else None
        output_dir = Path(context.work_dir) / "sft" if context.work_dir is not None else Path(scratch.name)
        config = SFTConfig(
            output_dir=str(output_dir),
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            per_device_train_batch_size=args.per_device_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            max_length=args.max_length,
            logging_steps=args.logging_steps,
            save_strategy="no",
            report_to=[],
            seed=context.seed,
            data_seed=context.seed,
            bf16=on_cuda and dtype == torch.bfloat16,
            fp16=on_cuda and dtype == torch.float16,
            use_cpu=not on_cuda,
            **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
            completion_only_loss=False,  # the dataset's own "labels" already mask the prompt
            packing=False,
            dataset_num_proc=None,
            disable_tqdm=not context.show_progress,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=self._tokenizer)
        try:
            result = trainer.train()
        except torch.OutOfMemoryError:
            raise ModelError(
                "out of memory while fine-tuning; lower training_arguments.per_device_batch_size or max_length."
            ) from None
        finally:
            if scratch is not None:
                scratch.cleanup()
        self.train_log = [e for e in trainer.state.log_history if "loss" in e or "train_loss" in e]
        logger.info("SFT finished: %d steps, training loss %.4f", result.global_step, result.training_loss)
        self._model = model
        self._model.eval()

    def save(self, directory: Path) -> None:
        super().save(directory)
        if self._model is None or not hasattr(self._model, "peft_config"):
            raise ModelError("the model has no trained adapter: call fit() before save().")
        self._model.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["adapter"] = ADAPTER_DIR
        state["train_log"] = self.train_log
        return state

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> LlmSftClassifier:
        directory = Path(directory)
        state = cls._read_state(directory)
        adapter = directory / state.get("adapter", ADAPTER_DIR)
        if not (adapter / "adapter_model.safetensors").is_file():
            raise ModelError(f"{adapter} has no adapter_model.safetensors; the saved model is incomplete. Retrain it.")
        model = cls._from_state(state, config, device)
        model.train_log = state.get("train_log", [])
        model._adapter_dir = adapter
        return model

    def _ensure_model(self) -> None:
        if self._model is not None:
            return
        super()._ensure_model()
        adapter = getattr(self, "_adapter_dir", None)
        if adapter is not None:
            from peft import PeftModel

            self._model = PeftModel.from_pretrained(self._model, str(adapter), is_trainable=False)
            self._model.eval()

    def _calibrate(self) -> None:  # fine-tuned models are not calibrated on a content-free input
        self.bias = None
