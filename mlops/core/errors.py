"""The one exception family lower layers raise; only main.py turns it into exit codes."""

from __future__ import annotations


class MlopsError(Exception):
    """A problem the user can fix; the message says what was expected, what was found and what to do."""

    exit_code = 1


class DataError(MlopsError):
    """The input data cannot be used as given."""

    exit_code = 2


class ConfigError(MlopsError):
    """A model config is missing, malformed or refers to something unusable."""

    exit_code = 2


class ExperimentError(MlopsError):
    """An experiment, run or model folder is missing, incomplete or would be overwritten."""

    exit_code = 3


class ModelError(MlopsError):
    """A model could not be built, loaded, trained or used."""

    exit_code = 4
