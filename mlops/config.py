"""Model configs: JSON files naming a ModelInterface class and its arguments, validated strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops.errors import ConfigError


class HyperparameterSearch(BaseModel):
    """A randomized search run inside the training data only."""

    model_config = ConfigDict(extra="forbid")

    n_iter: int = Field(gt=0)
    param_distributions: dict[str, list[Any]] = Field(min_length=1)
    cv_folds: int = Field(default=3, ge=2)
    scoring: str = "f1_macro"


class ModelConfig(BaseModel):
    """One model plugin and its arguments."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    module_path: str = Field(description="dotted module, e.g. models.tfidf_linear.model")
    class_name: str
    model_name: str | None = Field(default=None, description="hub id, local folder or packaged model")
    description: str = ""
    training_arguments: dict[str, Any] = Field(default_factory=dict)
    hyperparameter_search: HyperparameterSearch | None = None

    @field_validator("module_path")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not value or any(not part.isidentifier() for part in value.split(".")):
            raise ValueError(f"expected a dotted Python module path like 'models.tfidf_linear.model', found {value!r}")
        return value


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
