"""Model configs: JSON files naming a ModelInterface class and its arguments, validated strictly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.core.errors import ConfigError


class HyperparameterSearch(BaseModel):
    """A randomized search run inside the training data only."""

    model_config = ConfigDict(extra="forbid")

    n_iter: int = Field(gt=0)
    param_distributions: dict[str, list[Any]] = Field(min_length=1)
    cv_folds: int = Field(default=3, ge=2)
    scoring: str = "f1_macro"


class SearchDistribution(BaseModel):
    """One training argument's distribution for ``cli tune`` (Optuna): a float range, an int range or choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["loguniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(default=None, gt=0, description="uniform and int only: the grid step")
    log: bool = Field(default=False, description="int only: sample on a log scale")
    choices: list[Any] | None = Field(default=None, min_length=1, description="categorical only")

    @model_validator(mode="after")
    def _shape(self) -> SearchDistribution:
        if self.type == "categorical":
            if self.choices is None or self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("a categorical distribution takes 'choices' (a non-empty list) and no low/high/step")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"a {self.type} distribution takes 'low' and 'high' (and no 'choices')")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, found low={self.low}, high={self.high}")
        if self.type == "loguniform" and (self.low <= 0 or self.step is not None):
            raise ValueError("a loguniform distribution needs low > 0 and takes no step")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int distribution needs whole-number low, high and step")
        if self.log and (self.type != "int" or self.step not in (None, 1)):
            raise ValueError("'log' is for int distributions without a step; use type 'loguniform' for floats")
        return self


class Resources(BaseModel):
    """What one task of this model asks a Ray cluster for (``--executor ray``); unset: the family's default."""

    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, gt=0)
    gpus: float | None = Field(default=None, ge=0)


class TuningRecord(BaseModel):
    """Where a tuned config came from (``cli tune`` writes it): the study, and the experiment its trials ran on.

    ``nested`` False: every value was chosen by trials on the experiment's estimate train split, which holds the
    backtesting folds' test rows, so a backtest of the config on that experiment is optimistic. ``nested`` True:
    ``fold_training_arguments`` holds each backtesting fold's own values, chosen without that fold's test rows.
    """

    model_config = ConfigDict(extra="ignore")  # written by the tool: a later version's extra facts are no error

    study: str
    storage: str
    experiment_id: str
    input_sha256: str | None = None
    split_parameters: dict[str, Any] | None = None
    nested: bool = False
    best_trial: int | None = None
    best_value: float | None = None


#: Config fields that do not change what a fold trains, left out of a run's config fingerprint.
NON_TRAINING_FIELDS = frozenset({"search_space", "resources", "tuning"})


class ModelConfig(BaseModel):
    """One model plugin and its arguments."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    module_path: str = Field(description="dotted module, e.g. models.tfidf_linear.model")
    class_name: str
    model_name: str | None = Field(default=None, description="hub id, local folder or packaged model")
    description: str = ""
    training_arguments: dict[str, Any] = Field(default_factory=dict)
    hyperparameter_search: HyperparameterSearch | None = None
    search_space: dict[str, SearchDistribution] | None = Field(
        default=None, description="per training argument, the distribution `cli tune` samples it from")
    resources: Resources | None = None
    fold_training_arguments: dict[int, dict[str, Any]] | None = Field(
        default=None, description="per backtesting fold (0, 1, ...), training-argument values that replace the "
                                  "config's in that fold (written by `cli tune --nested`)")
    tuning: TuningRecord | None = None

    @field_validator("module_path")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not value or any(not part.isidentifier() for part in value.split(".")):
            raise ValueError(f"expected a dotted Python module path like 'models.tfidf_linear.model', found {value!r}")
        return value

    def for_backtesting_fold(self, fold: int) -> ModelConfig:
        """The config backtesting fold ``fold`` trains: that fold's ``fold_training_arguments`` in place of its own
        (the config itself when it has none for that fold)."""
        values = (self.fold_training_arguments or {}).get(fold)
        if values is None:
            return self
        return self.model_copy(update={"training_arguments": {**self.training_arguments, **values},
                                       "fold_training_arguments": None})


def backtest_caveat(config: ModelConfig, experiment_id: str) -> str | None:
    """Why a backtest of ``config`` on ``experiment_id`` is optimistic, or None: a config tuned (not nested) on
    that experiment had its values chosen by trials that trained on the backtesting folds' test rows."""
    tuning = config.tuning
    if tuning is None or tuning.experiment_id != experiment_id or config.fold_training_arguments:
        return None
    return (f"optimistic: tuned by study '{tuning.study}', whose trials trained on these folds' test rows; "
            "`cli tune --nested` tunes inside each fold for an honest backtest")


def tuned_elsewhere(config: ModelConfig, experiment_info: dict[str, Any]) -> list[str]:
    """How the experiment ``config`` was tuned on differs from this one (id, data, split parameters); empty when
    it is the same one or the config records no tuning."""
    tuning = config.tuning
    if tuning is None:
        return []
    found = [f"{name} {mine!r} vs {theirs!r}" for name, mine, theirs in (
        ("experiment", tuning.experiment_id, experiment_info["experiment_id"]),
        ("input_sha256", tuning.input_sha256, experiment_info["input_sha256"]),
        ("split parameters", tuning.split_parameters, experiment_info["split_parameters"]))
        if mine is not None and mine != theirs]
    return found


#: Fields added after runs and studies were first recorded: left out of fingerprints and records while unset.
LATER_FIELDS = ("fold_training_arguments", "tuning")


def config_json(config: ModelConfig, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """``config`` as JSON data to record or fingerprint: without ``exclude``, nor the later fields while they are
    unset (so fingerprints match older records, and older versions of the tool still read what this one writes)."""
    dumped = config.model_dump(mode="json", exclude=set(exclude))
    for key in LATER_FIELDS:
        if dumped.get(key, 0) is None:
            del dumped[key]
    return dumped


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown key (remove it or check its spelling)")
        else:
            lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def parse_model_config(raw: str, source: str) -> ModelConfig:
    """Parse and validate config JSON; ``source`` names the file in errors."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. Fix the file and retry."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object, found {type(data).__name__}.")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid model config:\n{format_validation_error(exc)}") from None


def load_model_config_file(path: Path) -> ModelConfig:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror}.") from None
    return parse_model_config(raw, str(path))


def config_fingerprint(config: ModelConfig, run_type: str | None = None) -> str:
    """What a config trains, hashed; per-fold values count only for backtesting (``run_type`` None: all)."""
    unused = NON_TRAINING_FIELDS  # search_space, resources, tuning: no effect on a fold
    if run_type not in (None, "backtesting"):
        unused = unused | {"fold_training_arguments"}
    dumped = config_json(config, unused)
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
