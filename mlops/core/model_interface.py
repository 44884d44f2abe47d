"""The contract every model plugin implements, and the data it exchanges with the runner.

Construction stores the config only (no download, no device work); ``fit`` trains and returns self;
``predict_proba`` returns probabilities aligned with ``labels``; ``save``/``load`` are a pair and what
``save`` writes is enough for ``load``. The runner, not the model, writes predictions and metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from mlops.core.config import HyperparameterSearch, ModelConfig, format_validation_error
from mlops.core.errors import ConfigError, ModelError
from mlops.core.text_dataset import TextDataset

if TYPE_CHECKING:
    from mlops.core.callbacks import TrainingCallback


@dataclass
class FitContext:
    """What the runner tells a model about where and how it is trained."""

    seed: int = 42
    work_dir: Path | None = None  # scratch space for checkpoints; the runner deletes it afterwards
    device: str | None = None  # "cpu", "cuda", "cuda:1"...; None lets the model choose
    show_progress: bool = True
    #: Extra ``mlops.core.callbacks.TrainingCallback`` objects (tracking, say) that a model's training loop
    #: notifies alongside its own; models without a loop ignore them.
    callbacks: list[TrainingCallback] = field(default_factory=list)


class TrainingArguments(BaseModel):
    """Base for a model's typed ``training_arguments``; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class ModelInterface(ABC):
    """A text classifier the lifecycle can train, score, save and load."""

    #: The pydantic model that validates this class's ``training_arguments``.
    training_arguments_class: ClassVar[type[TrainingArguments]] = TrainingArguments
    #: Whether ``fit`` takes label sets (``TextDataset.labels`` holding tuples) and ``predict_proba`` then returns
    #: one independent probability per label (rows need not sum to 1). Others are refused for multi-label data.
    supports_multi_label: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, training_arguments: TrainingArguments | None = None) -> None:
        """Store the config and its typed arguments (validated here only when not given); no other work."""
        self.config = config
        if training_arguments is None:
            try:
                training_arguments = self.training_arguments_class.model_validate(config.training_arguments)
            except ValidationError as exc:
                raise ConfigError(f"invalid training_arguments for {type(self).__name__}:\n"
                                  f"{format_validation_error(exc)}") from None
        elif not isinstance(training_arguments, self.training_arguments_class):
            raise TypeError(f"{type(self).__name__} takes {self.training_arguments_class.__name__}, "
                            f"found {type(training_arguments).__name__}")
        self.training_arguments = training_arguments
        self.labels: list[str] = []

    @classmethod
    def check_hyperparameter_search(cls, search: HyperparameterSearch, arguments: TrainingArguments) -> str | None:
        """What is wrong with ``search`` for this class (None: it can be run); checked when the config loads."""
        return f"{cls.__name__} does not support hyperparameter_search; remove that block."

    @classmethod
    def arithmetic(cls, arguments: TrainingArguments, device: str | None,
                   runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        """The settings outside the config that change this class's numbers for the same seed (device, thread
        count, precision). The runner puts them in each fold's identity, so a resume never mixes folds
        computed differently. With ``runtime`` (a fold's recorded ``runtime_info()``), the same read from a
        fold recorded before identities carried it. Default: none."""
        return {}

    @classmethod
    def parts_fingerprint(cls, arguments: TrainingArguments) -> dict[str, str]:
        """For a model made of other configs (the ensemble): each part's config fingerprint, so a stored fold
        of it stops matching when a part's config changes. Default: none."""
        return {}

    @abstractmethod
    def fit(
        self,
        train: TextDataset,
        val: TextDataset | None = None,
        *,
        labels: Sequence[str],
        context: FitContext | None = None,
    ) -> ModelInterface:
        """Train on ``train`` (early-stopping on ``val`` where the model supports it); return self.

        ``labels`` is the full, ordered label set: ``predict_proba`` columns follow it even if a
        class is absent from ``train``.
        """

    @abstractmethod
    def predict_proba(self, data: TextDataset) -> np.ndarray:
        """Probabilities of shape (len(data), len(self.labels)), rows summing to 1 (multi-label: each label's own
        probability)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything ``load`` needs into ``directory`` (which exists and is empty)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> ModelInterface:
        """Rebuild a fitted model from what ``save`` wrote (on ``device`` where that applies)."""

    def runtime_info(self) -> dict[str, Any]:
        """Facts about how the model ran (device, precision...) for the run's manifest."""
        return {}

    def export_onnx(self, directory: Path, *, precision: str, calibration: TextDataset, check: TextDataset,
                    min_agreement: float) -> dict[str, Any]:
        """Write a self-contained ONNX Runtime export into ``directory`` (exists, empty) and return its facts.

        The facts must name the ModelInterface that loads the export (``module_path``, ``class_name``)
        and how it compares with this model on ``check`` rows.
        """
        raise ModelError(f"{type(self).__name__} has no ONNX export; export a Hugging Face encoder model instead.")


@runtime_checkable
class CombinesMembers(Protocol):
    """A model made of other configs' models (the ensemble). A backtesting fold or hold-out estimate of it can
    combine what its members' own runs of the same fold already predicted, instead of training them again."""

    def reusable_members(self) -> list[Any]:
        """The members (``mlops.core.plugins.NamedConfig``) whose stored runs may be reused; [] when the model is
        set not to reuse them."""

    def fit_from_member_predictions(self, members: Sequence[str], val_probas: list[np.ndarray] | None,
                                    val_labels: Sequence[Any] | None, sources: dict[str, Any]) -> None:
        """Fit the combination on the members' val-row probabilities (None without val rows); ``sources`` says
        where each member's predictions came from, for ``runtime_info``."""

    def combine(self, probas: list[np.ndarray]) -> np.ndarray:
        """The combined probabilities of the members' probabilities on the same rows."""


def check_probabilities(proba: np.ndarray, n_rows: int, labels: Sequence[str], who: str) -> np.ndarray:
    """``proba`` as float64 if it has one finite row per input and one column per label; else ModelError."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n_rows, len(labels)):
        raise ModelError(f"{who}.predict_proba returned shape {proba.shape}, expected ({n_rows}, {len(labels)}).")
    if not np.all(np.isfinite(proba)):
        raise ModelError(f"{who}.predict_proba returned non-finite probabilities.")
    return proba
