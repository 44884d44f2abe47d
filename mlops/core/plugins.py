"""From a config to a model class: import only trusted code, and validate its arguments once.

``resolve(config)`` returns a ``NamedConfig``: the config, its ``ModelInterface`` subclass and the
typed ``training_arguments`` object that the model is built with. Nothing re-parses them later.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlops.core.config import ModelConfig, backtest_caveat, format_validation_error, tuned_elsewhere
from mlops.core.errors import ConfigError, ExperimentError
from mlops.core.model_interface import ModelInterface, TrainingArguments
from mlops.core.search_space import check_search_space

TRUSTED_PACKAGE = "models"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedConfig:
    """A validated model config, the class it names, its typed arguments and the name its runs go under."""

    name: str
    config: ModelConfig
    model_class: type[ModelInterface]
    source: str
    arguments: TrainingArguments

    def build(self) -> ModelInterface:
        """A fresh, unfitted model (construction does no work)."""
        return self.model_class(self.config, self.arguments)

    def for_backtesting_fold(self, fold: int) -> NamedConfig:
        """What backtesting fold ``fold`` trains: the config with that fold's ``fold_training_arguments`` (from
        ``cli tune --nested``) in place of its own, or the config itself when it has none."""
        config = self.config.for_backtesting_fold(fold)
        if config is self.config:
            return self
        return NamedConfig(name=self.name, config=config, model_class=self.model_class, source=self.source,
                           arguments=validate_training_arguments(config, self.model_class, f"{self.source} fold {fold}"))

    def check_fold_tuning(self, experiment_id: str, experiment_info: dict[str, Any], n_folds: int, *,
                          warn: bool = True) -> None:
        """Per-fold tuned values must be this experiment's (its folds, data and splits); a backtest on the rows a
        flat tune trained on is flagged."""
        per_fold = self.config.fold_training_arguments
        if per_fold:
            elsewhere = tuned_elsewhere(self.config, experiment_info)
            if elsewhere or sorted(per_fold) != list(range(n_folds)):
                found = "; ".join(elsewhere) or f"folds {sorted(per_fold)} vs this experiment's {n_folds} fold(s)"
                raise ExperimentError(
                    f"{self.source} has fold_training_arguments tuned on other splits ({found}): they do not belong "
                    f"to experiment {experiment_id!r}'s folds. Run `cli tune --nested` on this experiment, or "
                    "remove fold_training_arguments.")
        if warn and (caveat := backtest_caveat(self.config, experiment_id)):
            logger.warning("%s: %s", self.name, caveat)


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


def resolve_model_class(config: ModelConfig, *, allow_external: bool = False,
                        source: str = "config") -> type[ModelInterface]:
    """Turn ``module_path``/``class_name`` into a ModelInterface subclass, refusing untrusted code."""
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


def validate_training_arguments(config: ModelConfig, model_class: type[ModelInterface],
                                source: str = "config") -> TrainingArguments:
    """The typed ``training_arguments`` of ``config``, with its ``hyperparameter_search`` checked too."""
    try:
        arguments = model_class.training_arguments_class.model_validate(config.training_arguments)
    except ValidationError as exc:
        details = "\n".join(
            line if line.lstrip().startswith("training_arguments") else line.replace("  ", "  training_arguments.", 1)
            for line in format_validation_error(exc).splitlines()
        )
        raise ConfigError(f"{source} has invalid training_arguments for {model_class.__name__}:\n{details}") from None
    if config.hyperparameter_search is not None:
        problem = model_class.check_hyperparameter_search(config.hyperparameter_search, arguments)
        if problem:
            raise ConfigError(f"{source}: hyperparameter_search: {problem}")
    for fold in config.fold_training_arguments or {}:
        validate_training_arguments(config.for_backtesting_fold(fold), model_class,
                                    f"{source} fold_training_arguments[{fold}]")
    if config.search_space:
        problem = check_search_space(config.search_space, config.training_arguments,
                                     model_class.training_arguments_class)
        if problem:
            raise ConfigError(f"{source}: {problem}")
    return arguments


def resolve(config: ModelConfig, *, name: str, source: str, allow_external: bool = False) -> NamedConfig:
    """Import, check and validate ``config`` once; the result is what every run builds its models from."""
    model_class = resolve_model_class(config, allow_external=allow_external, source=source)
    arguments = validate_training_arguments(config, model_class, source=source)
    return NamedConfig(name=name, config=config, model_class=model_class, source=source, arguments=arguments)
