"""Loading causal LMs by name: a local folder, the packaged offline Gemma 270M, or a hub id.

Shared by the prompted and fine-tuned LLM classifiers and by ``mlops.augment.synthetic``. torch and
transformers are imported inside functions only.
"""

from __future__ import annotations

import logging
from typing import Any

from mlops.core.errors import ModelError

logger = logging.getLogger(__name__)

OFFLINE_DEFAULT = "google/gemma-3-270m"


def resolve_model_source(name: str | None) -> str:
    """Where to load ``name`` from (a folder path or a hub id); ``None`` means the offline default.

    ``models.hf_common.resolve.resolve_pretrained`` tries a local folder, then a packaged copy (the
    offline Gemma 270M is built by ``models.hf_common.gemma_gguf.materialize_gemma_270m``), then the hub.
    """
    from models.hf_common.resolve import resolve_pretrained

    return resolve_pretrained(name or OFFLINE_DEFAULT).source


def pick_dtype(requested: str, device: str) -> Any:
    import torch

    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if requested == "float16":
        return torch.float16
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(source: str, *, name: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure(name or source, exc)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def load_causal_lm(name: str | None, *, device: str, dtype: str = "auto"):
    """Return ``(model, tokenizer, source)`` with the model in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(name)
    tokenizer = load_tokenizer(source, name=name)
    torch_dtype = pick_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure(name or source, exc)) from None
    model.to(device)
    model.eval()
    logger.info("loaded causal LM %s from %s on %s (%s)", name or OFFLINE_DEFAULT, source, device, torch_dtype)
    return model, tokenizer, source


def _load_failure(name: str, exc: Exception) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"could not load the causal LM {name!r}: {first_line}. Expected a local model folder (config.json + "
        f"weights + tokenizer), {OFFLINE_DEFAULT!r} (the packaged offline copy), or a hub id reachable from "
        "this machine. Pass a local folder, or leave the model unset to use the offline default."
    )


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))
