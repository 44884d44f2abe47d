"""Device choice for torch models: CUDA when present, else CPU; logged once."""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _announce(device: str, reason: str) -> None:
    logger.info("using device %s (%s)", device, reason)


def pick_device(requested: str | None = None) -> str:
    """Return a torch device string: the requested one if usable, else cuda if available, else cpu."""
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            from mlops.core.errors import ModelError

            raise ModelError(f"device {requested!r} was requested but CUDA is not available; use --device cpu.")
        _announce(requested, "requested with --device or the config")
        return requested
    if torch.cuda.is_available():
        _announce("cuda", f"CUDA found: {torch.cuda.get_device_name(0)}")
        return "cuda"
    _announce("cpu", "no CUDA device found")
    return "cpu"


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
