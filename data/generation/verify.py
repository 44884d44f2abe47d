"""Scoring generated rows with a trained classifier (a model folder written by train-final-model)."""

from __future__ import annotations

import json
from pathlib import Path

from mlops.errors import ConfigError, DataError, ExperimentError


def load_verifier(folder: Path, labels: list[str], device: str | None = None):
    """Load ``folder`` with ``mlops.prediction.load_model_folder`` and check it knows every label."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExperimentError(f"--verify-with {folder}: expected a trained model folder, found no such directory.")
    try:
        from mlops.prediction import load_model_folder
    except ImportError:  # the lifecycle spine's loader is not there yet: read mlops_model.json directly
        load_model_folder = _load_model_folder_fallback
    model = load_model_folder(folder, device=device)
    unknown = [label for label in labels if label not in model.labels]
    if unknown:
        raise DataError(
            f"--verify-with {folder}: the classifier knows the labels {list(model.labels)} but the generated "
            f"labels {unknown} are not among them. Use a model trained on the same label set, or change --labels."
        )
    return model


def _load_model_folder_fallback(folder: Path, device: str | None = None):
    from mlops.config import ModelConfig, resolve_model_class

    meta_path = folder / "mlops_model.json"
    if not meta_path.is_file():
        raise ExperimentError(f"{folder} has no mlops_model.json; pass a folder written by train-final-model.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    try:
        config = ModelConfig.model_validate(meta["model_config"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{meta_path} does not hold a valid model_config ({exc}).") from None
    cls = resolve_model_class(config, source=str(meta_path))
    return cls.load(folder, config, device=device)


def predicted_labels(model, texts: list[str]) -> list[str]:
    from mlops.model_interface import TextDataset

    if not texts:
        return []
    proba = model.predict_proba(TextDataset(texts=texts))
    return [model.labels[i] for i in proba.argmax(axis=1)]
