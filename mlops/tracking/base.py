"""What a tracking backend implements, and the helpers backends share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLD_METRICS = ("accuracy", "macro_f1", "weighted_f1", "log_loss", "ece", "n",
                "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss")  # the last four: multi-label folds


class Backend:
    """What a tracking backend implements; ``start_run`` returns a handle passed back to the others."""

    name = "backend"

    def start_run(self, name: str, params: dict[str, Any], run_dir: Path, parent: Any = None) -> Any:
        raise NotImplementedError

    def log_metrics(self, run: Any, metrics: dict[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def log_files(self, run: Any, files: list[Path]) -> None:
        raise NotImplementedError

    def end_run(self, run: Any, status: str) -> None:
        raise NotImplementedError


def flat_params(prefix: str, value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"config": {"training_arguments": {"epochs": 3}}}`` -> ``{"config.training_arguments.epochs": 3}``."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, inner in value.items():
            flat_params(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def fold_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(metrics[key]) for key in FOLD_METRICS if isinstance(metrics.get(key), (int, float))}
