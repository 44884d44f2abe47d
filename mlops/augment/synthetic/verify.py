"""Scoring generated rows with a trained classifier (a model folder written by train-final-model)."""

from __future__ import annotations

from pathlib import Path

from mlops.core.errors import DataError, ExperimentError
from mlops.core.model_folder import LoadedModel, load_model_folder
from mlops.core.text_dataset import TextDataset


def load_verifier(folder: Path, labels: list[str], device: str | None = None) -> LoadedModel:
    """Load the model folder ``folder`` and check it knows every label to be generated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExperimentError(f"--verify-with {folder}: expected a trained model folder, found no such directory.")
    model = load_model_folder(folder, device=device)
    unknown = [label for label in labels if label not in model.labels]
    if unknown:
        raise DataError(
            f"--verify-with {folder}: the classifier knows the labels {list(model.labels)} but the generated "
            f"labels {unknown} are not among them. Use a model trained on the same label set, or change --labels."
        )
    return model


def predicted_labels(model: LoadedModel, texts: list[str]) -> list[str]:
    if not texts:
        return []
    proba = model.predict_proba(TextDataset(texts=texts))
    return [model.labels[i] for i in proba.argmax(axis=1)]
