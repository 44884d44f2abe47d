"""The typed ``training_arguments`` of the Hugging Face encoder classifier (and its ``peft`` block)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mlops.core.model_interface import TrainingArguments
from models.hf_common.training import PrecisionChoice

#: LoRA target modules per ``config.model_type`` (attention query/value projections).
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "albert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "modernbert": ["Wqkv"],
    "mpnet": ["q", "v"],
}


class LoraArguments(TrainingArguments):
    """The ``peft`` block: LoRA adapters on the attention projections; the head is trained fully."""

    r: int = Field(default=8, gt=0, description="adapter rank")
    alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (lora_alpha)")
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, min_length=1, description="module names; default per architecture (LORA_TARGET_MODULES)"
    )
    save: Literal["merged", "adapter"] = Field(
        default="merged", description="merged: a plain model folder; adapter: adapter weights + the base model's name"
    )


class MixUpArguments(TrainingArguments):
    """The ``mixup`` block: embedding MixUp (models/hf_encoder/objectives.py)."""

    alpha: float = Field(default=0.4, gt=0, description="lam ~ Beta(alpha, alpha)")
    ratio: float = Field(default=0.5, gt=0, le=4, description="mixed samples per batch, as a share of its rows")


class SupConArguments(TrainingArguments):
    """The ``supcon`` block: a supervised contrastive term on the pooled embeddings (objectives.py)."""

    weight: float = Field(default=0.1, gt=0, description="loss = cross-entropy + weight * supcon")
    temperature: float = Field(default=0.1, gt=0)
    k: int = Field(default=5, ge=1, description="neighbours for the validation Recall@k and kNN accuracy")


class HFEncoderTrainingArguments(TrainingArguments):
    epochs: int = Field(default=3, ge=1, description="epochs to run; with train_steps: the most epochs")
    train_steps: int | None = Field(
        default=None, ge=1, description="budget in optimiser updates: epochs become what reaches it, between "
        "min_epochs and epochs (small data gets enough updates, large data is not over-trained); null: epochs",
    )
    min_epochs: int = Field(default=1, ge=1, description="with train_steps: the fewest epochs")
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=64, ge=1, description="batch size for validation and prediction")
    learning_rate: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="share of optimizer steps spent warming up")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="gradient clipping; null disables it")
    max_length: int = Field(default=128, ge=8, description="tokens per text (or pair); longer inputs are truncated")
    truncation: Literal["head", "head_tail", "windows"] = Field(
        default="head", description="what a longer single text keeps: its first max_length tokens, its head and "
        "its tail (Sun et al. 2019), or all of it in overlapping windows whose logits are averaged (every window "
        "trains with the text's label); sentence pairs are always cut from the end")
    head_tokens: int | None = Field(default=None, ge=0, description="head_tail: tokens kept from the start "
                                    "(default max_length // 4), the rest from the end")
    window_overlap: int | None = Field(default=None, ge=0, description="windows: tokens two neighbouring windows "
                                       "share (default a quarter of a window)")
    max_windows: int = Field(default=8, ge=2, description="windows: the most per text (the first ones and the "
                             "last; a longer text's middle is left out)")
    early_stopping_patience: int | None = Field(
        default=2, ge=1, description="epochs without validation macro-F1 gain before stopping; null: run all epochs"
    )
    early_stopping_min_delta: float = Field(default=0.0, ge=0)
    class_weight: Literal["balanced", "auto"] | dict[str, float] | None = Field(
        default=None, description="balanced: n / (k * count) per class; auto: balanced when the largest training "
        "class is more than 1.5x the smallest; a {label: weight} object; null: unweighted",
    )
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    precision: PrecisionChoice = Field(
        default="auto", description="auto: bf16 on capable CPUs/GPUs (fp16 on older GPUs), else fp32"
    )
    frozen_layers: int = Field(
        default=0, ge=0, description="keep the embeddings and the first N transformer layers at their pretrained "
        "weights: backpropagation stops above them, so each update costs less (0: fine-tune every layer)")
    dropout: float | None = Field(
        default=None, ge=0, lt=1, description="training dropout of every dropout layer (attention included); null: "
        "the checkpoint's own (0.1 for most); 0 also lets attention use its fused kernel, so updates cost less")
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    tf32: bool = Field(
        default=True, description="CUDA: TF32 tensor cores for the fp32 matmuls left outside autocast (Ampere+)"
    )
    reuse_freed_memory: bool = Field(
        default=True, description="CPU training: glibc keeps freed gradient memory for reuse (faster steps)"
    )
    num_threads: Annotated[int, Field(ge=1)] | Literal["adaptive"] | None = Field(
        default=None,
        description="torch threads; default: this process's physical cores, fixed so that results do not depend on "
        "the machine's load; adaptive: the cores other processes leave free, re-checked as it runs (faster on a "
        "busy machine, but the numbers can change with the load)",
    )
    trust_remote_code: bool = False
    best_weights_storage: Literal["auto", "memory", "work_dir"] = "auto"
    peft: LoraArguments | None = None
    mixup: MixUpArguments | None = None
    supcon: SupConArguments | None = None
    calibration: Literal["temperature"] | None = Field(
        default=None, description="temperature: after training, fit one temperature T on the validation split "
        "(log-loss) and predict softmax(logits / T); null: off",
    )

    @model_validator(mode="after")
    def _epoch_bounds(self):
        if self.train_steps is not None and self.min_epochs > self.epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) is above epochs ({self.epochs}), the most epochs "
                             "train_steps may run; lower min_epochs or raise epochs")
        return self

    @field_validator("class_weight")
    @classmethod
    def _positive_weights(cls, value):
        if isinstance(value, dict):
            if not value:
                raise ValueError("class_weight must be 'balanced', 'auto', null or a non-empty {label: weight} object")
            bad = {k: v for k, v in value.items() if not v > 0}
            if bad:
                raise ValueError(f"class weights must be > 0, found {bad}")
        return value
