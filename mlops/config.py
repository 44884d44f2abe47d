"""Model configs: JSON files naming a ModelInterface class and its arguments, validated strictly."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops.errors import ConfigError

TRUSTED_PACKAGE = "models"


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


def _format_validation_error(error: ValidationError) -> str:
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
        raise ConfigError(f"{source} is not a valid model config:\n{_format_validation_error(exc)}") from None


def is_trusted_module(module_path: str) -> bool:
    return module_path == TRUSTED_PACKAGE or module_path.startswith(TRUSTED_PACKAGE + ".")


def available_model_modules() -> list[str]:
    """Model modules in the project's ``models`` package (``models.<name>.model``)."""
    package = importlib.import_module(TRUSTED_PACKAGE)
    return sorted(
        f"{TRUSTED_PACKAGE}.{info.name}.model"
        for info in pkgutil.iter_modules(package.__path__)
        if info.ispkg
    )


def resolve_model_class(config: ModelConfig, *, allow_external: bool = False, source: str = "config") -> type:
    """Turn ``module_path``/``class_name`` into a ModelInterface subclass, refusing untrusted code."""
    from mlops.model_interface import ModelInterface

    if not is_trusted_module(config.module_path) and not allow_external:
        raise ConfigError(
            f"{source}: module_path {config.module_path!r} is outside the project's '{TRUSTED_PACKAGE}' package; "
            "model code is only imported from there. If you trust that code, pass --allow-external-models "
            "(or set MLOPS_ALLOW_EXTERNAL_MODELS=1)."
        )
    try:
        module = importlib.import_module(config.module_path)
    except ModuleNotFoundError as exc:
        if exc.name and config.module_path.startswith(exc.name):
            raise ConfigError(
                f"{source}: module {config.module_path!r} not found (models available: "
                f"{', '.join(available_model_modules())})."
            ) from None
        raise ConfigError(
            f"{source}: module {config.module_path!r} needs the package {exc.name!r}, which is not installed; "
            "run `uv sync`."
        ) from None
    cls = getattr(module, config.class_name, None)
    if cls is None:
        found = sorted(
            name for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, ModelInterface) and obj is not ModelInterface
        )
        raise ConfigError(
            f"{source}: class {config.class_name!r} not found in module {config.module_path!r} "
            f"(classes there: {', '.join(found) or 'none'})."
        )
    if not (isinstance(cls, type) and issubclass(cls, ModelInterface)):
        raise ConfigError(f"{source}: {config.module_path}.{config.class_name} is not a ModelInterface subclass.")
    return cls


def validate_training_arguments(config: ModelConfig, model_class: type, source: str = "config") -> Any:
    """Check ``training_arguments`` (and ``hyperparameter_search``) against the model class."""
    try:
        arguments = model_class.training_arguments_class.model_validate(config.training_arguments)
    except ValidationError as exc:
        details = "\n".join(
            line if line.lstrip().startswith("training_arguments") else line.replace("  ", "  training_arguments.", 1)
            for line in _format_validation_error(exc).splitlines()
        )
        raise ConfigError(f"{source} has invalid training_arguments for {model_class.__name__}:\n{details}") from None
    if config.hyperparameter_search is not None and not model_class.supports_hyperparameter_search:
        raise ConfigError(
            f"{source}: {model_class.__name__} does not support hyperparameter_search; remove that block."
        )
    return arguments


def load_model_config_file(path: Path) -> ModelConfig:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror}.") from None
    return parse_model_config(raw, str(path))
