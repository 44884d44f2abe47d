"""Training helpers shared by the torch models: threads, precision, batching, class weights, best weights.

Everything imports torch inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from mlops.core.errors import ModelError
from models.hf_common.device import cpu_supports_bf16

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
PrecisionChoice = Literal["auto", "fp32", "bf16", "fp16"]


# --- memory --------------------------------------------------------------------------------------------------

#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory_for_reuse() -> bool:
    """Have glibc keep large freed blocks for reuse instead of unmapping them; True if it took effect.

    Every CPU training step allocates fresh gradients (MiniLM's word-embedding gradient alone is 47 MB).
    By default glibc maps each such block anew and returns it on free, so every step page-faults it in
    again, and zero-filling it is a visible share of a step (docs/benchmarks.md). Freed memory then stays
    with the process instead of going back to the OS. Process-wide and permanent, so it is done only when training on the CPU.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, for one)
        return False


# --- threads -------------------------------------------------------------------------------------------------


def available_cores() -> int:
    """Physical cores this process may run on (hyper-threads do not speed up matrix maths)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or allowed
    except ImportError:
        physical = allowed
    return max(1, min(allowed, physical))


#: ``num_threads`` value that lets the thread count follow the load (faster on a busy machine, not reproducible).
ADAPTIVE = "adaptive"


def effective_threads(requested: int | str | None) -> int | str:
    """The torch thread count a run uses: the one asked for, else this process's physical cores (fixed, so the
    arithmetic, and thus the metrics, do not depend on what else runs); ``"adaptive"`` stays as it is."""
    if requested == ADAPTIVE:
        return ADAPTIVE
    return int(requested) if requested else available_cores()


class ThreadBudget:
    """Torch intra-op threads: ``requested`` if an int, else the physical cores, else (``"adaptive"``) the
    physical cores other processes leave free.

    A fixed count keeps results bit-identical whatever else runs on the machine: a reduction split over
    another number of threads rounds differently. What makes a fixed team slow on a busy machine is OpenMP
    threads spinning at every barrier while a team mate waits for a core; the CLI sets a
    short spin (``GOMP_SPINCOUNT``, see ``mlops.core.runtime``) so a waiting thread soon sleeps instead.

    ``"adaptive"``: ``apply()`` measures how many cores *other* processes used since the last call (system
    CPU time minus this process's), sampling for ``sample_seconds`` the first time, and sets the count to the
    remaining cores (at least 1); ``used`` records every count a fit ran with. Call ``apply()`` at the start
    of a fit, every few seconds of training and once per prediction call.
    """

    def __init__(self, requested: int | str | None, sample_seconds: float = 0.25) -> None:
        self.requested = effective_threads(requested)
        self.cores = available_cores()
        self.sample_seconds = sample_seconds
        self._last: tuple[float, float, float] | None = None
        self.threads: int | None = None
        self.used: set[int] = set()

    @property
    def adaptive(self) -> bool:
        return self.requested == ADAPTIVE

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            import psutil

            system = psutil.cpu_times()
            busy = sum(getattr(system, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq", "steal"))
            own = psutil.Process().cpu_times()
            return time.monotonic(), busy, own.user + own.system
        except (ImportError, OSError, AttributeError):
            return None

    def others_busy_cores(self) -> float | None:
        """Average cores used by other processes since the last call (None if it cannot be measured)."""
        if self._last is None:
            self._last = self._snapshot()
            time.sleep(self.sample_seconds)
        now = self._snapshot()
        if now is None or self._last is None:
            return None
        elapsed = now[0] - self._last[0]
        if elapsed < 0.05:
            return None
        others = ((now[1] - self._last[1]) - (now[2] - self._last[2])) / elapsed
        self._last = now
        return max(0.0, others)

    def apply(self) -> int:
        import torch

        if not self.adaptive:
            threads = int(self.requested)
        else:
            others = self.others_busy_cores()
            free = self.cores if others is None else self.cores - int(others + 0.5)
            threads = max(1, min(self.cores, free))
            if self.threads is not None and threads != self.threads:
                logger.info("torch threads %d -> %d: other processes use %.1f of %d cores "
                            "(results then depend on the load; fix the count with training_arguments.num_threads)",
                            self.threads, threads,
                            others or 0.0, self.cores)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.threads = threads
        self.used.add(threads)
        return threads


# --- precision -----------------------------------------------------------------------------------------------


def resolve_precision(requested: PrecisionChoice, device: str) -> tuple[Precision, str]:
    """Pick the autocast precision for ``device``; return it with the reason (for logs and the manifest)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return ("bf16", "CUDA device supports bf16") if bf16_ok else ("fp16", "CUDA device without bf16 support")
        if requested == "bf16" and not bf16_ok:
            raise ModelError("precision 'bf16' was requested but this CUDA device does not support it; "
                             "set training_arguments.precision to 'fp16', 'fp32' or 'auto'.")
        return requested, "set in training_arguments.precision"
    if kind == "cpu":
        native = cpu_supports_bf16()
        if requested == "auto":
            if native:
                return "bf16", "CPU has native bf16 instructions (avx512_bf16/amx)"
            return "fp32", "CPU lacks native bf16 instructions (avx512_bf16/amx)"
        if requested == "fp16":
            raise ModelError("precision 'fp16' is not supported on CPU; set training_arguments.precision to "
                             "'bf16', 'fp32' or 'auto'.")
        if requested == "bf16" and not native:
            logger.warning("bf16 on a CPU without avx512_bf16/amx is emulated and usually slower than fp32 "
                           "(set training_arguments.precision to 'auto' or 'fp32')")
        return requested, "set in training_arguments.precision"
    if requested == "auto":
        return "fp32", f"no mixed precision on device type {kind!r}"
    return requested, "set in training_arguments.precision"


def autocast(device: str, precision: Precision) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


# --- batching ------------------------------------------------------------------------------------------------


def token_lengths(
    tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    chunk_size: int = 2048,
) -> tuple[np.ndarray, int]:
    """Token counts after truncation to ``max_length`` and how many rows were truncated.

    Tokenizes ``chunk_size`` rows at a time and keeps only the counts, so memory stays flat for big inputs.
    """
    n = len(texts)
    lengths = np.empty(n, dtype=np.int32)
    truncated = 0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        batch_pairs = None if pairs is None else [str(p) for p in pairs[start:stop]]
        encoded = tokenizer(
            [str(t) for t in texts[start:stop]], batch_pairs,
            truncation=True, max_length=max_length + 1,  # one extra token reveals truncation
            return_attention_mask=False, return_token_type_ids=False, verbose=False,
        )
        counts = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int32, count=stop - start)
        truncated += int((counts > max_length).sum())
        lengths[start:stop] = np.minimum(counts, max_length)
    return lengths, truncated


# --- loss ----------------------------------------------------------------------------------------------------


def class_weight_vector(
    spec: Literal["balanced"] | Mapping[str, float] | None, labels: Sequence[str], y: np.ndarray
) -> np.ndarray | None:
    """Per-class loss weights in ``labels`` order: ``"balanced"`` (n / (k * count)), a dict, or None.

    Classes absent from ``y`` get weight 1 under "balanced" (they never occur as a target anyway); classes
    missing from a dict get weight 1.
    """
    if spec is None:
        return None
    k = len(labels)
    if np.ndim(y) == 2:  # label sets: a positive weight per label, negatives / positives (BCE's pos_weight)
        if spec != "balanced":
            raise ModelError("for multi-label data class_weight must be balanced, auto or null (per-label weights "
                             "come from each label's share of positive rows).")
        positives = np.asarray(y).sum(axis=0).astype(np.float64)
        return np.where(positives > 0, (len(y) - positives) / np.maximum(positives, 1.0), 1.0)
    if spec == "balanced":
        counts = np.bincount(y, minlength=k).astype(np.float64)
        present = counts > 0
        weights = np.ones(k, dtype=np.float64)
        weights[present] = len(y) / (present.sum() * counts[present])
        return weights
    unknown = sorted(set(spec) - set(labels))
    if unknown:
        raise ModelError(f"class_weight names labels {unknown} that are not in the label set {list(labels)}; "
                         "fix training_arguments.class_weight.")
    return np.array([float(spec.get(label, 1.0)) for label in labels], dtype=np.float64)


# --- best weights for early stopping -------------------------------------------------------------------------


class BestWeights:
    """Keeps a copy of the trainable parameters of the best epoch, in memory or in a scratch folder.

    Only parameters that require grad are copied (for LoRA: the adapters and the head), so the copy is
    small for adapters and one model's worth otherwise. ``restore`` puts them back; ``discard`` removes
    the scratch file, if any. Nothing is written outside ``scratch_dir``.
    """

    FILE_NAME = "best_trainable_weights.safetensors"

    def __init__(self, scratch_dir: Path | None = None) -> None:
        self.scratch_dir = scratch_dir
        self.epoch: int | None = None
        self.score = -math.inf
        self._state: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _trainable(model) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, p) for name, p in model.named_parameters() if p.requires_grad)

    @property
    def path(self) -> Path | None:
        return None if self.scratch_dir is None else self.scratch_dir / self.FILE_NAME

    def update(self, model, epoch: int, score: float, min_delta: float = 0.0) -> bool:
        """Remember ``model``'s weights if ``score`` beats the best by more than ``min_delta``."""
        if not score > self.score + min_delta:
            return False
        state = {name: p.detach().to("cpu", copy=True) for name, p in self._trainable(model)}
        if self.path is not None:
            from safetensors.torch import save_file

            self.scratch_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(self.path))
        else:
            self._state = state
        self.epoch, self.score = epoch, score
        return True

    def restore(self, model) -> None:
        import torch

        if self.epoch is None:
            return
        if self.path is not None:
            from safetensors.torch import load_file

            state = load_file(str(self.path))
        else:
            state = self._state
        with torch.no_grad():
            for name, p in self._trainable(model):
                p.copy_(state[name].to(p.device))

    def discard(self) -> None:
        self._state = None
        if self.path is not None and self.path.exists():
            self.path.unlink()
            with contextlib.suppress(OSError):  # leave the folder if something else wrote there
                self.scratch_dir.rmdir()


def trainable_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


# --- quiet loading -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for a block; the previous state is restored."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def log_truncation(what: str, truncated: int, total: int, max_length: int, *, windows: bool = False) -> None:
    """Warn how many ``what`` texts were longer than ``max_length`` tokens and cut (with ``windows``: how many
    windows came out longer when re-tokenized, which costs only their last tokens: the next window reads them)."""
    if truncated and windows:
        logger.info("%d of %d %s windows (%.1f%%) come out longer than max_length=%d when re-tokenized (mostly a "
                    "token or two, a window that starts inside a word): their last tokens are cut, and the next "
                    "window reads them",
                    truncated, total, what, 100 * truncated / total, max_length)
    elif truncated:
        logger.warning("%d of %d %s texts (%.1f%%) are longer than max_length=%d tokens and were truncated "
                       "(raise training_arguments.max_length to keep more)", truncated, total, what,
                       100 * truncated / total, max_length)
