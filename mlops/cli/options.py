"""The options and choices that several commands share, defined once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer




class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class MetricOption(str, Enum):
    macro_f1 = "macro_f1"
    accuracy = "accuracy"
    micro_f1 = "micro_f1"  # the last three: multi-label experiments
    samples_f1 = "samples_f1"
    subset_accuracy = "subset_accuracy"


ArtifactsDir = Annotated[
    Path,
    typer.Option("--artifacts-dir", envvar="MLOPS_ARTIFACTS_DIR", file_okay=False,
                 help="Root folder of experiments and runs (env: MLOPS_ARTIFACTS_DIR)."),
]
ExperimentId = Annotated[str, typer.Option("--experiment-id", help="A plain name for the experiment.")]
ModelConfigName = Annotated[
    str, typer.Option("--model-config-name", help="A config in model_configs/ (see list-models) or a .json path.")
]
Force = Annotated[bool, typer.Option("--force", help="Replace existing results instead of refusing or resuming.")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table for people; json (stdout) or csv for scripts.")]
Device = Annotated[
    Optional[str], typer.Option("--device", help="torch device for neural models, e.g. cpu or cuda:0 (default: auto).")
]
AllowExternal = Annotated[
    bool,
    typer.Option("--allow-external-models", envvar="MLOPS_ALLOW_EXTERNAL_MODELS",
                 help="Allow model code outside the project's models package (only for code you trust)."),
]
Encoding = Annotated[str, typer.Option("--encoding", help="Text encoding of CSV input.")]
TextColumn = Annotated[str, typer.Option("--text-column", help="The column holding the text.")]
TargetColumn = Annotated[str, typer.Option("--target-column", help="The column holding the label.")]
TextPairColumn = Annotated[Optional[str], typer.Option("--text-pair-column", help="The second text of a pair, if any.")]
ModelPath = Annotated[Path, typer.Option("--model-path", help="A folder written by train-final-model.")]
ModelConfigNames = Annotated[list[str], typer.Option(
    "--model-config-name", help="A config in model_configs/ (see list-models), a tuned config of the experiment, "
                                "or a .json path; repeatable.")]


DEFAULT_ARTIFACTS = Path("artifacts")


class TrackOption(str, Enum):
    mlflow = "mlflow"
    tensorboard = "tensorboard"


Track = Annotated[
    Optional[list[TrackOption]],
    typer.Option("--track", help="Also log runs to mlflow (MLFLOW_TRACKING_URI, else <artifacts>/mlflow.db) "
                                 "and/or tensorboard (event files in the run folder); repeatable."),
]


class ExecutorOption(str, Enum):
    local = "local"
    ray = "ray"


Executor = Annotated[ExecutorOption, typer.Option(
    "--executor", help="local: in this process, one at a time; ray: every (model, fold) or trial is a Ray task.")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", help="With --executor ray: join this cluster (default: start a local Ray instance).")]
RaySharedData = Annotated[bool, typer.Option(
    "--ray-shared-data", help="With --executor ray: workers read the input file by its path (a shared "
                              "filesystem; sha256 checked) instead of receiving it through the object store.")]
