"""What besides the config changes a torch model's numbers, for a fold's identity (``ModelInterface.arithmetic``)."""

from __future__ import annotations

import os
from typing import Any

from models.hf_common.training import PrecisionChoice, effective_threads, resolve_precision


def torch_arithmetic(num_threads: int | str | None, precision: PrecisionChoice, device: str | None) -> dict[str, Any]:
    """What besides the config changes a torch model's numbers: the device kind, the precision, (on the CPU)
    the thread count and the distributed world size; for a fold's identity (``ModelInterface.arithmetic``).

    ``device`` None means this machine's default (CUDA when present). A CUDA device this process cannot see
    (a Ray driver without a GPU sizing GPU tasks) keeps the precision as configured ("auto" included)."""
    import torch

    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    visible = kind == "cpu" or torch.cuda.is_available()
    return {"device": kind, "precision": resolve_precision(precision, kind)[0] if visible else precision,
            "torch_threads": effective_threads(num_threads) if kind == "cpu" else None,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def legacy_torch_arithmetic(runtime: dict[str, Any]) -> dict[str, Any]:
    """``torch_arithmetic`` of a fold recorded before identities carried it, from the fold's runtime facts."""
    kind = str(runtime.get("device", "cpu")).split(":")[0]
    return {"device": kind, "precision": runtime.get("precision"),
            "torch_threads": runtime.get("torch_threads") if kind == "cpu" else None,
            "world_size": int((runtime.get("distributed") or {}).get("world_size", 1))}
