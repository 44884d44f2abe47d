"""Building the encoder: a pretrained checkpoint with a fresh classification head, LoRA, a saved folder."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from mlops.core.errors import ModelError
from models.hf_common.resolve import ResolvedModel, resolve_pretrained
from models.hf_common.training import quiet_transformers
from models.hf_encoder.arguments import LORA_TARGET_MODULES, HFEncoderTrainingArguments, LoraArguments

logger = logging.getLogger(__name__)


def _label_maps(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def load_pretrained(resolved: ResolvedModel, labels: list[str], args: HFEncoderTrainingArguments, *,
                    multi_label: bool = False):
    """(tokenizer, model): the checkpoint with a new head for ``labels`` (a sigmoid per label with
    ``multi_label``) and its lower layers frozen per ``args.frozen_layers``; the tokenizer gets a pad token."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(resolved.source, trust_remote_code=args.trust_remote_code)
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                resolved.source,
                **_label_maps(labels),
                problem_type="multi_label_classification" if multi_label else "single_label_classification",
                dtype=torch.float32,
                ignore_mismatched_sizes=True,  # a checkpoint's own head may have another number of classes
                trust_remote_code=args.trust_remote_code,
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"cannot load {resolved.source!r} ({resolved.kind}) as a sequence classifier: {exc}. Check that "
            "model_name names an encoder with config.json, weights and tokenizer files (set "
            "training_arguments.trust_remote_code to true only for a model whose code you trust)."
        ) from exc
    fresh = sorted(set(loading.get("missing_keys", [])) | {key for key, *_ in loading.get("mismatched_keys", [])})
    if fresh:
        logger.info("newly initialised (trained from scratch): %s", ", ".join(fresh[:8]))
    if len(fresh) > 8:
        logger.warning("%d weights of %s were not in the checkpoint; is it an encoder of the expected kind?",
                       len(fresh), resolved.source)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"the tokenizer of {resolved.source!r} has no pad, eos or unk token to pad with.")
        tokenizer.pad_token = fallback
        logger.info("tokenizer has no pad token; padding with %r", fallback)
    model.config.pad_token_id = tokenizer.pad_token_id
    freeze_lower_layers(model, args.frozen_layers)
    if args.dropout is not None:
        set_dropout(model, args.dropout)
    return tokenizer, model


def set_dropout(model, p: float) -> None:
    """Set every dropout layer's rate to ``p`` (attention reads its rate from its own dropout layer)."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer in layers:
        layer.p = p
    logger.info("dropout %g in all %d dropout layers (training_arguments.dropout)", p, len(layers))


def transformer_layers(model):
    """The encoder's stack of transformer layers (the ModuleList as long as config.num_hidden_layers)."""
    import torch

    wanted = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == wanted:
            return module
    raise ModelError(f"frozen_layers: no stack of {wanted} transformer layers found in this "
                     f"{type(model).__name__}; set training_arguments.frozen_layers to 0.")


def freeze_lower_layers(model, n_layers: int) -> None:
    """Keep the embeddings and the first ``n_layers`` transformer layers at their pretrained weights."""
    if not n_layers:
        return
    layers = transformer_layers(model)
    if n_layers >= len(layers):
        raise ModelError(f"frozen_layers is {n_layers} but the model has {len(layers)} transformer layers; "
                         f"freeze at most {len(layers) - 1} so that some layers fine-tune.")
    embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    for module in [embeddings, *layers[:n_layers]]:
        for parameter in module.parameters():
            parameter.requires_grad = False
    logger.info("frozen: the embeddings and the first %d of %d transformer layers", n_layers, len(layers))


def wrap_lora(model, lora: LoraArguments) -> tuple[Any, dict[str, Any]]:
    """``model`` with LoRA adapters (the head trains fully), and the facts for the manifest."""
    from peft import LoraConfig, TaskType, get_peft_model

    model_type = getattr(model.config, "model_type", "")
    targets = lora.target_modules or LORA_TARGET_MODULES.get(model_type)
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=targets,  # None lets PEFT use its own default for the architecture
    )
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers API that warns about its own deprecation
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ModelError(
            f"LoRA could not be applied to a {model_type!r} model: {exc}. Set training_arguments.peft."
            "target_modules to the names of its attention projections."
        ) from exc
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    used = sorted(model.peft_config["default"].target_modules)
    logger.info("LoRA r=%d alpha=%g on %s: %d of %d parameters trainable (%.2f%%)",
                lora.r, lora.alpha, used, trainable, total, 100 * trainable / total)
    return model, {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": used,
                   "save": lora.save}


def load_saved(directory: Path, labels: list[str], save_mode: str, base_model_ref: str | None,
               args: HFEncoderTrainingArguments):
    """(tokenizer, model) of a folder written by ``HFEncoderClassifier.save``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=args.trust_remote_code)
            if save_mode == "lora_adapter":
                from peft import PeftModel

                resolved = resolve_pretrained(base_model_ref)
                base = AutoModelForSequenceClassification.from_pretrained(
                    resolved.source, **_label_maps(labels), dtype=torch.float32,
                    ignore_mismatched_sizes=True, trust_remote_code=args.trust_remote_code,
                )
                with warnings.catch_warnings():  # see wrap_lora
                    warnings.simplefilter("ignore", FutureWarning)
                    model = PeftModel.from_pretrained(base, directory)
            else:
                model = AutoModelForSequenceClassification.from_pretrained(
                    directory, dtype=torch.float32, trust_remote_code=args.trust_remote_code
                )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load the saved model in {directory}: {exc}") from exc
    return tokenizer, model


def set_activation_checkpointing(model, enabled: bool) -> None:
    """Gradient (activation) checkpointing on or off, under its transformers 5 name or its older one."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def clip_max_length(tokenizer, requested: int) -> int:
    """``requested`` tokens, or the checkpoint's own limit where it is lower (with a warning)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 8 <= limit < 100_000 and requested > limit:
        logger.warning("max_length %d exceeds the model's limit of %d tokens; using %d", requested, limit, limit)
        return limit
    return requested


def read_meta(directory: Path, name: str, expected_format: int, who: str) -> dict:
    """A saved folder's meta file, checked for its format (``ModelError`` naming the fix otherwise)."""
    path = Path(directory) / name
    if not path.is_file():
        raise ModelError(f"{directory} has no {name}; it is not a model saved by {who}.")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != expected_format:
        raise ModelError(f"{path} has format {meta.get('format')!r}, expected {expected_format}; "
                         "retrain the model with this version of the tool.")
    return meta
