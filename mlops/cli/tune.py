"""tune: an Optuna study over a config's search_space, flat or nested."""

from __future__ import annotations

from enum import Enum
import json
import sys
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, cell, emit, out
from mlops.cli.options import (AllowExternal, ArtifactsDir, DEFAULT_ARTIFACTS, Device, Executor, ExecutorOption,
                               ExperimentId, Format, ModelConfigName, OutputFormat, RayAddress, RaySharedData)

commands = typer.Typer()


class PrunerOption(str, Enum):
    median = "median"
    halving = "halving"
    none = "none"


@commands.command("tune")
def tune(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigName,
    n_trials: Annotated[int, typer.Option("--n-trials", min=1, help="Trials the study should have finished "
                                                                    "(complete or pruned), counting earlier runs.")] = 20,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, help="Start no new trial after this many "
                                                                              "seconds (per study with --nested).")] = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Default: the config's name.")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="An Optuna storage URL (default: sqlite:///<experiment>/tuning/<study>.db).")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(
        "--inner-folds", min=2, help="Score each trial on K stratified folds of the estimate's train split "
                                     "(default: train on it, score on its val split).")] = None,
    pruner: Annotated[PrunerOption, typer.Option("--pruner", help="Stop bad trials early (encoders report every "
                                                                  "epoch).")] = PrunerOption.median,
    nested: Annotated[bool, typer.Option(
        "--nested", help="Also tune inside each backtesting fold (a study per fold, on its train split only), so "
                         "the tuned config's backtest is honest (nested CV); costs (folds + 1) x --n-trials.")] = False,
    fmt: Format = OutputFormat.table,
    executor: Executor = ExecutorOption.local,
    ray_address: RayAddress = None,
    ray_shared_data: RaySharedData = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Search the config's search_space with Optuna (never on hold-out rows); write the best config as <name>_tuned."""
    from mlops.tuning.service import TuneOptions

    options = TuneOptions(n_trials=n_trials, timeout=timeout, study_name=study_name, storage=storage,
                          inner_folds=inner_folds, pruner=pruner.value, executor=executor.value,
                          ray_address=ray_address, ray_shared_data=ray_shared_data, nested=nested)
    result = build_application(artifacts_dir, device, allow_external_models).tune(experiment_id, model_config_name, options)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return
    rows = [{**row, "params": json.dumps(row["params"])} for row in result.trials]
    emit(rows, fmt, f"study {result.study_name}: {model_config_name} on {experiment_id}",
          ["number", "state", "value", "params", "duration_s", "steps"])
    if fmt is OutputFormat.table:
        out.print(f"Ran {result.trials_run_now} trial(s) now; the study has {len(result.trials)} ({result.storage})")
        if result.best_config_path is not None:
            out.print(f"Best: trial {result.best_trial}, validation macro-F1 {result.best_value:.4f}, "
                      f"{json.dumps(result.best_params)}")
            for fold in result.folds:
                out.print(f"Backtesting fold {fold['fold'] + 1}: study {fold['study_name']}, ran "
                          f"{fold['trials_run_now']} now, best validation macro-F1 "
                          f"{cell(fold['best_value'])}, {json.dumps(fold['best_params'])}")
            name = result.best_config_path.stem
            backtest = ("its backtest trains each fold with that fold's own best values, chosen without the fold's "
                        "test rows, so it is an honest estimate of tuning plus training" if result.nested else
                        "the backtest folds' test rows were among the trials' training rows, so its backtest is "
                        "optimistic (--nested tunes inside each fold)")
            out.print(f"Tuned config: [bold]{result.best_config_path}[/] (--model-config-name {name}). The trials "
                      f"never saw the hold-out: `cli estimate-performance` on it is an honest figure; {backtest}.")
