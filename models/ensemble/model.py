"""An ensemble of other configs: each member trains on the same rows, and their probabilities are combined with
weights chosen on the validation rows only (never on the rows the ensemble is scored on).

``combiner: greedy`` is Caruana et al.'s ensemble selection (ICML 2004, as in AutoGluon's weighted ensemble):
start empty, add (with replacement) the member whose addition gives the lowest log-loss of the averaged
probabilities on the val rows, ``iterations`` times; the weights are the counts. ``combiner: stacking`` fits a
multinomial logistic regression on the members' val probabilities. ``combiner: mean`` averages them.
Without val rows, or with one member, the weights are equal.

In a backtesting fold or a hold-out estimate, the runner gives the ensemble its members' stored predictions of
the same rows when each member's own run of that fold is there and matches (``reuse_member_runs``): the weights
are then fitted on the stored val-row probabilities and applied to the stored test-row ones, with the same
result as training the members again, in seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.text_dataset import TextDataset

logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"


class EnsembleTrainingArguments(TrainingArguments):
    members: list[str] = Field(min_length=1, description="config names (model_configs/) or .json paths")
    combiner: Literal["greedy", "stacking", "mean"] = "greedy"
    iterations: int = Field(default=25, ge=1, description="greedy: members added (with replacement)")
    reuse_member_runs: bool = Field(default=True, description=(
        "backtesting and estimate-performance: combine the members' stored predictions of the same fold (run "
        "them first) instead of training them again; members without a matching run are trained"))


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def _resolve(members: list[str]):
    from mlops.core.catalog import DEFAULT_CONFIG_DIR, ModelCatalog

    catalog = ModelCatalog(DEFAULT_CONFIG_DIR)
    named = []
    for name in members:
        member = catalog.resolve(name)
        if issubclass(member.model_class, EnsembleClassifier):
            raise ConfigError(f"ensemble member {name!r} is itself an ensemble; name its members instead.")
        named.append(member)
    return named


def greedy_weights(member_probas: list[np.ndarray], y: np.ndarray, iterations: int) -> np.ndarray:
    """Caruana's ensemble selection with replacement on log-loss; returns weights summing to 1."""
    counts = np.zeros(len(member_probas))
    total = np.zeros_like(member_probas[0])
    for step in range(1, iterations + 1):
        losses = [_log_loss((total + p) / step, y) for p in member_probas]
        best = int(np.argmin(losses))  # ties: the earlier member
        counts[best] += 1
        total += member_probas[best]
    return counts / counts.sum()


class EnsembleClassifier(ModelInterface):
    training_arguments_class = EnsembleTrainingArguments

    def __init__(self, config: ModelConfig, training_arguments: EnsembleTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self.members: list[ModelInterface] = []
        self.member_names: list[str] = []
        self.member_configs: list[ModelConfig] = []
        self.weights: np.ndarray | None = None
        self.stacker = None
        #: Where each member's predictions came from when the fold reused stored runs ({} when trained here).
        self.reused_from: dict[str, Any] = {}
        self._fitted_val: tuple[TextDataset, np.ndarray] | None = None  # (val rows seen in fit, their probabilities)

    @classmethod
    def parts_fingerprint(cls, arguments: EnsembleTrainingArguments) -> dict[str, str]:
        from mlops.core.config import config_fingerprint

        return {member.name: config_fingerprint(member.config) for member in _resolve(arguments.members)}

    def resolve_members(self):
        """The members as resolved configs (NamedConfig), in the config's order."""
        return _resolve(self.training_arguments.members)

    def fit(self, train: TextDataset, val: TextDataset | None = None, *, labels: Sequence[str],
            context: FitContext | None = None) -> EnsembleClassifier:
        self.labels = list(labels)
        context = context or FitContext()
        self.members, self.member_names, self.member_configs, self.reused_from = [], [], [], {}
        for member in self.resolve_members():
            logger.info("ensemble: training member %s on %d rows", member.name, len(train))
            model = member.build()
            model.fit(train, val, labels=self.labels, context=context)
            self.members.append(model)
            self.member_names.append(member.name)
            self.member_configs.append(member.config)
        has_val = val is not None and len(val) > 0
        val_probas = [m.predict_proba(val) for m in self.members] if has_val else None
        self._fit_combiner(val_probas, val.labels if has_val else None)
        # the runner scores the same val rows next (val_predictions.csv): keep their probabilities for it
        self._fitted_val = (val, self.combine(val_probas)) if has_val else None
        return self

    def reusable_members(self):
        return self.resolve_members() if self.training_arguments.reuse_member_runs else []

    def fit_from_member_predictions(self, members: Sequence[str], val_probas: list[np.ndarray] | None,
                                    val_labels: Sequence[Any] | None, sources: dict[str, Any]) -> None:
        if not self.labels:
            raise ModelError("set the ensemble's labels before fitting it on its members' predictions.")
        self.members, self.member_configs = [], []
        self.member_names, self.reused_from = list(members), dict(sources)
        self._fit_combiner(val_probas, val_labels)

    def _fit_combiner(self, probas: list[np.ndarray] | None, val_labels: Sequence[Any] | None) -> None:
        arguments = self.training_arguments
        n = len(self.member_names)
        self.weights, self.stacker = np.full(n, 1.0 / n), None
        if probas is None or not len(val_labels) or n == 1 or arguments.combiner == "mean":
            return
        index = {label: j for j, label in enumerate(self.labels)}
        y = np.array([index[label] for label in val_labels])
        probas = [np.asarray(p, dtype=np.float64) for p in probas]
        if arguments.combiner == "greedy":
            self.weights = greedy_weights(probas, y, arguments.iterations)
        elif len(np.unique(y)) > 1:
            from sklearn.linear_model import LogisticRegression

            fitted = LogisticRegression(max_iter=2000, C=1.0).fit(np.hstack(probas), y)
            self.stacker = _LinearStacker(fitted.coef_, fitted.intercept_, fitted.classes_)
        logger.info("ensemble weights on %d val rows: %s", len(y),
                    dict(zip(self.member_names, np.round(self.weights, 3).tolist(), strict=True)))

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if not self.members:
            raise ModelError("the ensemble is not fitted." if self.weights is None else
                             "this ensemble was combined from its members' stored predictions, so it holds no "
                             "member models to predict new rows with; train it (train-final-model) for that.")
        if self._fitted_val is not None and data is self._fitted_val[0]:
            return self._fitted_val[1].copy()
        return self.combine([m.predict_proba(data) for m in self.members])

    def combine(self, probas: list[np.ndarray]) -> np.ndarray:
        probas = [np.asarray(p, dtype=np.float64) for p in probas]
        if self.stacker is not None:
            raw = self.stacker.predict_proba(np.hstack(probas))
            out = np.zeros((len(probas[0]), len(self.labels)))
            out[:, self.stacker.classes_] = raw
            return out
        return np.tensordot(self.weights, np.stack(probas), axes=1)

    def runtime_info(self) -> dict[str, Any]:
        if self.reused_from:
            members = {name: {"reused_predictions": self.reused_from[name]} for name in self.member_names}
        else:
            members = {name: model.runtime_info() for name, model in zip(self.member_names, self.members, strict=True)}
        return {"members": members,
                "weights": None if self.weights is None else dict(zip(self.member_names, self.weights.tolist(),
                                                                      strict=True)),
                "combiner": self.training_arguments.combiner}

    def save(self, directory: Path) -> None:
        if not self.members:
            raise ModelError("an ensemble combined from stored predictions holds no member models to save.")
        directory = Path(directory)
        for i, (name, model, config) in enumerate(zip(self.member_names, self.members, self.member_configs,
                                                      strict=True)):
            folder = directory / MEMBERS_DIR / f"{i}_{name}"
            folder.mkdir(parents=True)
            model.save(folder)
            (folder / "member_config.json").write_text(config.model_dump_json(indent=2))
        stacker = None
        if self.stacker is not None:  # coefficients as plain numbers, no pickle
            stacker = {"coef": self.stacker.coef_.tolist(), "intercept": self.stacker.intercept_.tolist(),
                       "classes": self.stacker.classes_.tolist()}
        (directory / ENSEMBLE_FILE).write_text(json.dumps({
            "labels": self.labels, "members": self.member_names, "weights": self.weights.tolist(),
            "combiner": self.training_arguments.combiner, "stacker": stacker}, indent=2))

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> EnsembleClassifier:
        from mlops.core.plugins import resolve_model_class

        directory = Path(directory)
        record = json.loads((directory / ENSEMBLE_FILE).read_text())
        model = cls(config)
        model.labels = record["labels"]
        model.member_names = record["members"]
        model.weights = np.asarray(record["weights"])
        for i, name in enumerate(model.member_names):
            folder = directory / MEMBERS_DIR / f"{i}_{name}"
            member_config = ModelConfig.model_validate_json((folder / "member_config.json").read_text())
            member_class = resolve_model_class(member_config, source=f"ensemble member {name}")
            member = member_class.load(folder, member_config, device=device)
            model.members.append(member)
            model.member_configs.append(member_config)
        if record.get("stacker"):
            model.stacker = _LinearStacker(**record["stacker"])
        return model


class _LinearStacker:
    """The stacking model's multinomial logistic regression, rebuilt from its saved coefficients."""

    def __init__(self, coef, intercept, classes) -> None:
        self.coef_, self.intercept_ = np.asarray(coef), np.asarray(intercept)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        scores = features @ self.coef_.T + self.intercept_
        if scores.shape[1] == 1:  # binary: scikit-learn keeps one column of coefficients
            scores = np.hstack([-scores, scores]) / 2.0
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)
