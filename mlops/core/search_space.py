"""A config's ``search_space``: checked against the model's training arguments, sampled through an Optuna trial.

Every name must be a training argument of the model, and every value the space can produce at its edges (low,
high, each choice) must be accepted by the model's typed arguments, so a bad space fails when the config is
loaded, before any training. Choices Optuna cannot store as they are (lists, objects) are sampled as their JSON
text and decoded back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mlops.core.config import SearchDistribution

if TYPE_CHECKING:
    from mlops.core.model_interface import TrainingArguments

_PLAIN = (type(None), bool, int, float, str)


def _edge_values(distribution: SearchDistribution) -> list[Any]:
    if distribution.type == "categorical":
        return list(distribution.choices or [])
    if distribution.type == "int":
        return [int(distribution.low), int(distribution.high)]
    return [float(distribution.low), float(distribution.high)]


def check_search_space(space: dict[str, SearchDistribution], training_arguments: dict[str, Any],
                       arguments_class: type[TrainingArguments]) -> str | None:
    """What is wrong with ``space`` for a model whose arguments ``arguments_class`` validates (None: nothing)."""
    fields = arguments_class.model_fields
    unknown = sorted(name for name in space if name not in fields)
    if unknown:
        return (f"search_space names {unknown}, which are not training arguments of this model "
                f"(its arguments: {', '.join(sorted(fields))}).")
    for name, distribution in space.items():
        for value in _edge_values(distribution):
            try:
                arguments_class.model_validate({**training_arguments, name: value})
            except ValidationError as exc:
                reason = "; ".join(item["msg"] for item in exc.errors())
                return (f"search_space.{name}: the value {value!r} ({distribution.type}) is rejected by the model's "
                        f"training_arguments: {reason}. Narrow the range or fix the choices.")
    return None


def example_search_space(arguments: TrainingArguments) -> str:
    """A ``search_space`` entry this model accepts, as JSON text for an error message: its first float training
    argument with a positive value, searched log-uniformly around it (else its first numeric one)."""
    fields = type(arguments).model_fields
    values = {name: getattr(arguments, name, None) for name in fields}
    numeric = [n for n, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    floats = [n for n in numeric if isinstance(values[n], float)]
    if floats:
        name, value = floats[0], values[floats[0]]
        entry = {"type": "loguniform", "low": value / 4, "high": value * 4}
    elif numeric:
        name, value = numeric[0], values[numeric[0]]
        entry = {"type": "int", "low": max(1, value // 2), "high": value * 2}
    else:
        return '"search_space": {"<a training argument>": {"type": "categorical", "choices": [...]}}'
    return json.dumps({"search_space": {name: entry}})[1:-1]


def _encoded(distribution: SearchDistribution) -> bool:
    return any(not isinstance(choice, _PLAIN) for choice in distribution.choices or [])


def suggest(trial, space: dict[str, SearchDistribution]) -> dict[str, Any]:
    """Training-argument values for one Optuna ``trial``, sampled from ``space`` (decoded)."""
    values: dict[str, Any] = {}
    for name, d in space.items():
        if d.type == "loguniform":
            values[name] = trial.suggest_float(name, d.low, d.high, log=True)
        elif d.type == "uniform":
            values[name] = trial.suggest_float(name, d.low, d.high, step=d.step)
        elif d.type == "int":
            values[name] = trial.suggest_int(name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        elif _encoded(d):
            values[name] = json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in d.choices]))
        else:
            values[name] = trial.suggest_categorical(name, d.choices)
    return values


def decode(space: dict[str, SearchDistribution], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored ``params`` as training-argument values (JSON-encoded choices decoded)."""
    return {name: json.loads(value) if name in space and space[name].type == "categorical" and _encoded(space[name])
            else value for name, value in params.items()}
