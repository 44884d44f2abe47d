"""The `cli` command: the only layer that knows about terminals, exit codes and option parsing.

Heavy libraries (pandas, scikit-learn, torch, transformers) are imported inside the commands, so
`cli --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from mlops.app import Application

app = typer.Typer(
    name="cli",
    help="Fine-tune text classifiers and measure, honestly, how good they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (files, CI logs) gets wide lines instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
logger = logging.getLogger("mlops")


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class BacktestingStrategyOption(str, Enum):
    cv = "cv"
    train_val = "train-val"


class RuntimeOption(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class ExportPrecisionOption(str, Enum):
    auto = "auto"
    int8 = "int8"
    fp32 = "fp32"


class RunTypeOption(str, Enum):
    backtesting = "backtesting"
    performance_estimation = "performance_estimation"


class MetricOption(str, Enum):
    macro_f1 = "macro_f1"
    accuracy = "accuracy"


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
DEFAULT_ARTIFACTS = Path("artifacts")


class TrackOption(str, Enum):
    mlflow = "mlflow"
    tensorboard = "tensorboard"


Track = Annotated[
    Optional[list[TrackOption]],
    typer.Option("--track", help="Also log runs to mlflow (MLFLOW_TRACKING_URI, else <artifacts>/mlflow.db) "
                                 "and/or tensorboard (event files in the run folder); repeatable."),
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="When another command is writing the same experiment, wait for it to finish instead of "
                       "failing (cli --wait run-backtesting ...).")] = False,
) -> None:
    """Configure logging once for every command."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err, show_path=False, show_time=False, rich_tracebacks=verbose)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mlops.runtime import configure_openmp

    configure_openmp()  # before any command imports torch: OpenMP reads it once, when it loads
    _State.verbose = verbose
    _State.wait = wait
    _State.quiet = quiet


class _State:
    verbose = False
    wait = False
    quiet = False


def handle_errors(command):
    """Turn domain errors into one red line and an exit code; never a traceback for user mistakes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mlops.errors import MlopsError

        try:
            return command(*args, **kwargs)
        except MlopsError as exc:
            if _State.verbose:
                err.print_exception()
            err.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]Interrupted.[/] Nothing half-written was kept; completed folds and generated batches "
                      "resume when the same command is rerun.")
            raise typer.Exit(130) from None

    return wrapper


def _application(artifacts_dir: Path, device: str | None = None, allow_external: bool = False,
                 track: list[TrackOption] | None = None) -> Application:
    from mlops.app import Application

    return Application(artifacts_dir, device=device, allow_external_models=allow_external,
                       track=[t.value for t in track or []], wait_for_lock=_State.wait)


def _emit(rows: list[dict[str, Any]], fmt: OutputFormat, title: str, columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    if fmt is OutputFormat.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _interval(bounds: list[float] | None, digits: int = 4) -> str | None:
    return None if bounds is None else f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _run_stage(stage: str, experiment_id: str, model_config_name: str, *, force: bool, device: str | None,
               allow_external: bool, artifacts_dir: Path, track: list[TrackOption] | None, **options: Any):
    """The body the run commands share: build the application and run one stage of the lifecycle."""
    application = _application(artifacts_dir, device, allow_external, track)
    return getattr(application, stage)(experiment_id, model_config_name, force=force, **options)


def _print_run(result) -> None:
    summary = result.summary
    rows = [{"metric": name, "mean": summary[name]["mean"], "std": summary[name]["std"],
             "per_fold": summary[name]["per_fold"]}
            for name in ("accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1", "log_loss",
                         "ece")]
    title = f"{result.run_type.value}: {result.config_name} on {result.experiment_id} ({summary['n_folds']} fold(s))"
    single = result.fold_metrics[0] if summary["n_folds"] == 1 else None
    if single is not None:  # one split: no spread across folds, so say how many rows and how sure
        for row in rows:
            row["95% CI"] = _interval(single.get(f"{row['metric']}_ci"))
    _emit(rows, OutputFormat.table, title)
    if single is not None:
        intervals = "95% CI: Wilson (accuracy), bootstrap of 1,000 resamples (macro-F1)"
        if single.get("accuracy_ci") is None:
            intervals = "no intervals recorded (a fold from an older version; --force recomputes it)"
        out.print(f"One split of {single['n']} test rows; {intervals}.")
    if result.resumed_folds:
        out.print(f"Reused completed folds {[k + 1 for k in result.resumed_folds]} (pass --force to retrain them).")
    out.print(f"Results in {result.directory}")


# --- commands ------------------------------------------------------------------------------------
@app.command("generate-splits")
@handle_errors
def generate_splits(
    experiment_id: ExperimentId,
    input_file: Annotated[Path, typer.Option("--input-file", help="Labelled CSV, TSV or Parquet file.")],
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    target_column: Annotated[str, typer.Option("--target-column")] = "label",
    text_pair_column: Annotated[Optional[str], typer.Option("--text-pair-column", help="Second text of a pair.")] = None,
    group_column: Annotated[Optional[str], typer.Option("--group-column", help="Rows sharing it stay together.")] = None,
    test_size: Annotated[float, typer.Option("--test-size", help="Share of rows in the global hold-out.")] = 0.2,
    backtesting_strategy: Annotated[BacktestingStrategyOption, typer.Option("--backtesting-strategy")] = BacktestingStrategyOption.cv,
    cv_folds: Annotated[int, typer.Option("--cv-folds")] = 5,
    backtesting_val_size: Annotated[float, typer.Option("--backtesting-val-size", help="Val share of each fold's training part.")] = 0.1,
    backtesting_test_size: Annotated[float, typer.Option("--backtesting-test-size", help="Test share (train-val strategy).")] = 0.2,
    perf_estimation_val_size: Annotated[float, typer.Option("--perf-estimation-val-size")] = 0.1,
    final_model_val_size: Annotated[float, typer.Option("--final-model-val-size")] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    encoding: Encoding = "utf-8",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on empty texts or labels instead of dropping them.")] = False,
    normalize_labels: Annotated[bool, typer.Option(
        "--normalize-labels", help="Merge labels that differ only by case or spacing ('Positive' / 'positive') into "
                                   "their most frequent spelling, instead of refusing them.")] = False,
    max_text_chars: Annotated[int, typer.Option(
        "--max-text-chars", min=0, help="Cut longer texts to this many characters (logged with a count); 0: no "
                                        "limit.")] = 20_000,
    force: Force = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Hold out a stratified test set, then plan the backtesting folds (no duplicate or group leakage)."""
    from mlops.experiment_service import Columns
    from mlops.splitting import BacktestingStrategy, SplitParameters

    params = SplitParameters(
        test_size=test_size, backtesting_strategy=BacktestingStrategy(backtesting_strategy.value), cv_folds=cv_folds,
        backtesting_val_size=backtesting_val_size, backtesting_test_size=backtesting_test_size,
        perf_estimation_val_size=perf_estimation_val_size, final_model_val_size=final_model_val_size, seed=seed,
    )
    columns = Columns(text=text_column, target=target_column, text_pair=text_pair_column, group=group_column)
    experiment = _application(artifacts_dir).generate_splits(
        experiment_id, input_file, columns, params, encoding=encoding, strict=strict, force=force,
        normalize_labels=normalize_labels, max_text_chars=max_text_chars or None,
    )
    info = experiment.info
    sizes = info["split_sizes"]
    out.print(f"Experiment [bold]{experiment_id}[/]: {info['rows_used']} rows, labels {info['labels']}, "
              f"input sha256 {info['input_sha256'][:12]}")
    if info["rows_dropped_empty"]:
        out.print(f"Dropped {info['rows_dropped_empty']} rows with an empty text or label (--strict fails instead).")
    out.print(f"Hold-out: {sizes['holdout_test']} rows; train-val: {sizes['train_val']} rows")
    for k, fold in enumerate(sizes["backtesting"]):
        out.print(f"  fold {k + 1}: train {fold['train']}, val {fold['val']}, test {fold['test']}")
    out.print(f"Final model: train {sizes['final_model']['train']}, val {sizes['final_model']['val']}")
    out.print(f"Saved to {experiment.directory}")


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


@app.command("run-backtesting")
@handle_errors
def run_backtesting(
    experiment_id: ExperimentId,
    model_config_name: Annotated[list[str], typer.Option(
        "--model-config-name", help="A config in model_configs/ (see list-models), a tuned config of the "
                                    "experiment, or a .json path; repeatable.")],
    force: Force = False,
    executor: Executor = ExecutorOption.local,
    ray_address: RayAddress = None,
    ray_shared_data: RaySharedData = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    track: Track = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Train a fresh model per fold (early-stopping on the fold's val), score its test; resumes by default."""
    application = _application(artifacts_dir, device, allow_external_models, track)
    for result in application.run_backtesting_many(experiment_id, model_config_name, force=force,
                                                   executor=executor.value, ray_address=ray_address,
                                                   ray_shared_data=ray_shared_data):
        _print_run(result)


class PrunerOption(str, Enum):
    median = "median"
    halving = "halving"
    none = "none"


@app.command("tune")
@handle_errors
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
    result = _application(artifacts_dir, device, allow_external_models).tune(experiment_id, model_config_name, options)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return
    rows = [{**row, "params": json.dumps(row["params"])} for row in result.trials]
    _emit(rows, fmt, f"study {result.study_name}: {model_config_name} on {experiment_id}",
          ["number", "state", "value", "params", "duration_s", "steps"])
    if fmt is OutputFormat.table:
        out.print(f"Ran {result.trials_run_now} trial(s) now; the study has {len(result.trials)} ({result.storage})")
        if result.best_config_path is not None:
            out.print(f"Best: trial {result.best_trial}, validation macro-F1 {result.best_value:.4f}, "
                      f"{json.dumps(result.best_params)}")
            for fold in result.folds:
                out.print(f"Backtesting fold {fold['fold'] + 1}: study {fold['study_name']}, ran "
                          f"{fold['trials_run_now']} now, best validation macro-F1 "
                          f"{_cell(fold['best_value'])}, {json.dumps(fold['best_params'])}")
            name = result.best_config_path.stem
            backtest = ("its backtest trains each fold with that fold's own best values, chosen without the fold's "
                        "test rows, so it is an honest estimate of tuning plus training" if result.nested else
                        "the backtest folds' test rows were among the trials' training rows, so its backtest is "
                        "optimistic (--nested tunes inside each fold)")
            out.print(f"Tuned config: [bold]{result.best_config_path}[/] (--model-config-name {name}). The trials "
                      f"never saw the hold-out: `cli estimate-performance` on it is an honest figure; {backtest}.")


@app.command("estimate-performance")
@handle_errors
def estimate_performance(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigName,
    force: Force = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    track: Track = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Train on the train-val set and score once on the untouched global hold-out."""
    _print_run(_run_stage("estimate_performance", experiment_id, model_config_name, force=force, device=device,
                          allow_external=allow_external_models, artifacts_dir=artifacts_dir, track=track))


@app.command("train-final-model")
@handle_errors
def train_final_model(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigName,
    model_output_dir: Annotated[Optional[Path], typer.Option("--model-output-dir", file_okay=False,
                                                             help="Where to write the model folder.")] = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="Skip the checked ONNX export that an encoder "
                                                                "gets for fast CPU prediction and start-up.")] = False,
    force: Force = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    track: Track = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Train on all the data (train/val per --final-model-val-size) and save a deployable model folder."""
    result = _run_stage("train_final_model", experiment_id, model_config_name, force=force, device=device,
                        allow_external=allow_external_models, artifacts_dir=artifacts_dir, track=track,
                        model_output_dir=model_output_dir, export=not no_export)
    if result.validation_metrics:
        out.print(f"Validation (early-stopping split, optimistic): accuracy {result.validation_metrics['accuracy']:.4f}, "
                  f"macro-F1 {result.validation_metrics['macro_f1']:.4f}")
    out.print(f"Model saved to [bold]{result.model_dir}[/]")
    if result.export and result.export.get("directory"):
        check = result.export["check"]
        out.print(f"ONNX export ({result.export['precision']}) in {result.model_dir / result.export['directory']}: "
                  f"same label as the model on {check['label_agreement']:.2%} of {check['rows']} held-back rows; "
                  "predict-new and serve use it on the CPU (--runtime torch for the torch model)")


@app.command("predict-new")
@handle_errors
def predict_new(
    model_path: Annotated[Path, typer.Option("--model-path", help="A folder written by train-final-model.")],
    input_file: Annotated[Optional[Path], typer.Option("--input-file", help="CSV/Parquet to label.")] = None,
    output_file: Annotated[Optional[Path], typer.Option("--output-file", help="Default: artifacts/predictions/<input>_predictions.csv")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Label one text and print the result.")] = None,
    text_pair: Annotated[Optional[str], typer.Option("--text-pair", help="With --text: its second text (pair models).")] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    text_pair_column: Annotated[Optional[str], typer.Option("--text-pair-column")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows read and predicted at a time.")] = 4096,
    max_text_chars: Annotated[int, typer.Option(
        "--max-text-chars", min=0, help="The model sees each text cut to this many characters (counted in the "
                                        "log); 0: no limit. The output keeps the texts whole.")] = 20_000,
    encoding: Encoding = "utf-8",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    runtime: Annotated[RuntimeOption, typer.Option(
        "--runtime", help="auto: the model's ONNX export (see export-model) when there is one and no GPU, "
                          "else torch.")] = RuntimeOption.auto,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Label new data: the input's columns plus predicted_label and one proba_<label> column per class."""
    from mlops.errors import DataError

    application = _application(artifacts_dir, device, allow_external_models)
    if (text is None) == (input_file is None):
        raise DataError("pass exactly one of --input-file (a file to label) or --text (one text).")
    if text is not None:
        label, probabilities = application.predict_text(model_path, text, text_pair, runtime.value)
        out.print(f"[bold]{label}[/]  " + "  ".join(f"{k}={v:.4f}" for k, v in probabilities.items()))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("predict", total=None)
        summary = application.predict_new(
            model_path, input_file, output_file, text_column=text_column, text_pair_column=text_pair_column,
            encoding=encoding, force=force, chunk_rows=chunk_rows, runtime=runtime.value,
            max_text_chars=max_text_chars or None,
            on_start=lambda total: progress.update(task, total=total),
            on_progress=lambda n: progress.advance(task, n),
        )
    out.print(f"Labelled {summary.rows} rows -> [bold]{summary.output_file}[/]  ({summary.label_counts})")


@app.command("export-model")
@handle_errors
def export_model(
    model_path: Annotated[Path, typer.Option("--model-path", help="A folder written by train-final-model.")],
    precision: Annotated[ExportPrecisionOption, typer.Option(
        "--precision", help="auto: int8 if it passes the agreement check, else fp32; int8: fail instead of "
                            "falling back; fp32: exact.")] = ExportPrecisionOption.auto,
    data_file: Annotated[Optional[Path], typer.Option(
        "--data-file", help="Rows to calibrate and check on (default: the model's training file).")] = None,
    text_column: Annotated[Optional[str], typer.Option("--text-column", help="Default: as in training.")] = None,
    text_pair_column: Annotated[Optional[str], typer.Option("--text-pair-column")] = None,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Check rows (plus up to 512 calibration rows).")] = 4000,
    min_agreement: Annotated[float, typer.Option(
        "--min-agreement", help="Share of check rows where int8 must give the fp32 model's label.")] = 0.995,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Default: <model-path>/onnx, "
                                                       "which predict-new uses automatically.")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="Default: as in training.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export.")] = False,
    allow_external_models: AllowExternal = False,
) -> None:
    """Export a trained encoder to ONNX Runtime (int8 or fp32) for faster CPU prediction and start-up."""
    application = _application(DEFAULT_ARTIFACTS, None, allow_external_models)
    result = application.export_model(
        model_path, output_dir=output_dir, precision=precision.value, data_file=data_file, text_column=text_column,
        text_pair_column=text_pair_column, encoding=encoding, rows=rows, min_agreement=min_agreement, force=force)
    check = result.check
    out.print(f"ONNX export ({result.precision}) -> [bold]{result.directory}[/] in {result.seconds:.0f} s; same label "
              f"as the fp32 model on {check['label_agreement']:.2%} of {check['rows']} check rows "
              f"(max |dp| {check['max_abs_probability_difference']:.4f})")


class PoolingOption(str, Enum):
    mean = "mean"
    cls = "cls"


@app.command("pseudo-label")
@handle_errors
def pseudo_label(
    model_path: Annotated[str, typer.Option(
        "--model-path", help="A folder written by train-final-model (a Hugging Face encoder), or a pretrained "
                             "encoder: a folder or hub id such as sentence-transformers/all-MiniLM-L6-v2.")],
    input_file: Annotated[Path, typer.Option("--input-file", help="CSV/TSV/Parquet of texts to pseudo-label.")],
    output_file: Annotated[Path, typer.Option("--output-file", help="CSV of the pseudo-labelled rows.")],
    labelled_file: Annotated[Optional[Path], typer.Option(
        "--labelled-file", help="Labelled rows that measure each cluster's purity (default: the input's rows "
                                "that have a --target-column value).")] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    target_column: Annotated[str, typer.Option("--target-column")] = "label",
    n_clusters: Annotated[Optional[int], typer.Option(
        "--n-clusters", help="k-means clusters (default: sqrt(rows / 2), at least one per label).")] = None,
    pca_components: Annotated[int, typer.Option(
        "--pca-components", help="PCA dimensions before clustering (capped by rows and dimensions); 0: no PCA.")] = 50,
    min_purity: Annotated[float, typer.Option(
        "--min-purity", help="Keep clusters whose labelled members share the majority label at least this often.")] = 0.9,
    min_labelled: Annotated[int, typer.Option(
        "--min-labelled", help="Clusters with fewer labelled members get no label.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts embedded at a time.")] = 64,
    pooling: Annotated[PoolingOption, typer.Option(
        "--pooling", help="mean of the last layer's token states, or the first (CLS) token's.")] = PoolingOption.mean,
    encoding: Encoding = "utf-8",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
) -> None:
    """Pseudo-label unlabelled texts from the pure clusters they share with labelled ones (encoder embeddings)."""
    from mlops.pseudo_label import PseudoLabelSettings

    settings = PseudoLabelSettings(n_clusters=n_clusters, pca_components=pca_components, min_purity=min_purity,
                                   min_labelled=min_labelled, seed=seed)
    summary = _application(DEFAULT_ARTIFACTS, device, allow_external_models).pseudo_label(
        model_path, input_file, output_file, labelled_file=labelled_file, text_column=text_column,
        target_column=target_column, settings=settings, batch_size=batch_size, pooling=pooling.value,
        encoding=encoding, force=force)
    stats = summary.stats
    purity = "n/a" if stats["mean_purity"] is None else f"{stats['mean_purity']:.3f}"
    out.print(f"Kept {stats['clusters_kept']} of {stats['clusters']} clusters (purity >= {stats['min_purity']:g}; "
              f"{stats['clusters_with_label']} had at least {stats['min_labelled']} labelled members), mean purity "
              f"{purity}: {stats['rows_written']} of {stats['pool_rows']} unlabelled rows -> "
              f"[bold]{summary.output_file}[/]  ({stats['label_counts']})", highlight=False, soft_wrap=True)
    if stats.get("classifier_agreement") is not None:
        out.print(f"The classifier gives the pseudo label to {stats['classifier_agreement']:.1%} of them.")


@app.command("evaluate-prediction")
@handle_errors
def evaluate_prediction(
    predictions_file: Annotated[Path, typer.Option("--predictions-file")],
    ground_truth_file: Annotated[Path, typer.Option("--ground-truth-file")],
    prediction_column: Annotated[str, typer.Option("--prediction-column")] = "predicted_label",
    target_column: Annotated[str, typer.Option("--target-column")] = "label",
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="Match rows by this column, not by position.")] = None,
    encoding: Encoding = "utf-8",
    fmt: Format = OutputFormat.table,
) -> None:
    """Metrics of a predictions file against a labelled file."""
    metrics = _application(DEFAULT_ARTIFACTS).evaluate_prediction(
        predictions_file, ground_truth_file, prediction_column=prediction_column, target_column=target_column,
        id_column=id_column, encoding=encoding)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    rows = [{"metric": k, "value": metrics[k]} for k in
            ("n", "accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1")]
    _emit(rows, fmt, "prediction metrics")
    if fmt is OutputFormat.table:
        _print_confusion(metrics["confusion_matrix"])


def _print_confusion(confusion: dict[str, Any]) -> None:
    labels = confusion["labels"]
    rows = [{"true \\ predicted": label, **{p: str(v) for p, v in zip(labels, row, strict=True)}}
            for label, row in zip(labels, confusion["matrix"], strict=True)]
    _emit(rows, OutputFormat.table, "confusion matrix")


@app.command("data-generate")
@handle_errors
def data_generate(
    name: Annotated[str, typer.Option("--name", help="Name of the generated dataset (a plain name).")],
    examples_per_sentiment: Annotated[Optional[int], typer.Option("--examples-per-sentiment", min=1,
                                                                  help="Rows to generate per label.")] = None,
    distribution_from_file: Annotated[Optional[Path], typer.Option(
        "--distribution-from-file", help="Copy the label distribution of this labelled CSV.")] = None,
    total_examples: Annotated[Optional[int], typer.Option("--total-examples", min=1)] = None,
    labels: Annotated[Optional[list[str]], typer.Option("--labels", help="A label (repeatable); default: from "
                                                        "--distribution-from-file, else negative/neutral/positive.")] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language code of the generated text.")] = "en",
    model: Annotated[Optional[str], typer.Option("--model", help="Hub id or local folder (default: offline Gemma 3 270M).")] = None,
    seed_examples: Annotated[Optional[Path], typer.Option("--seed-examples", help="Labelled CSV to draw few-shot examples from.")] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    target_column: Annotated[str, typer.Option("--target-column")] = "label",
    domain: Annotated[str, typer.Option("--domain", help='e.g. "product reviews", "financial news".')] = "movie reviews",
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.9,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 0.95,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=8)] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    verify_with: Annotated[Optional[Path], typer.Option("--verify-with", help="A trained model folder that scores label agreement.")] = None,
    filter_disagreeing: Annotated[bool, typer.Option("--filter-disagreeing", help="With --verify-with: drop rows it labels differently.")] = False,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", file_okay=False, help="Default: <artifacts-dir>/generated")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing dataset of that name.")] = False,
    device: Device = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Synthetic labelled data from an instruction LLM with few-shot prompts, in any language."""
    from data.generation import GenerationRequest
    from mlops.io import check_plain_name

    check_plain_name(name, "--name")
    request = GenerationRequest(
        name=name, output_dir=output_dir or artifacts_dir / "generated", examples_per_label=examples_per_sentiment,
        distribution_from_file=distribution_from_file, total_examples=total_examples, labels=labels, lang=lang,
        model=model, seed_examples=seed_examples, text_column=text_column, label_column=target_column,
        domain=domain, temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed, force=force,
        verify_with=verify_with, filter_disagreeing=filter_disagreeing, max_new_tokens=max_new_tokens, device=device,
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("generate", total=None, note="")

        def on_progress(update) -> None:
            progress.update(task, total=update.requested, completed=update.produced,
                            note=f"{update.candidates} candidates, {update.rejected} rejected")

        report = _application(artifacts_dir, device).generate_data(request, progress=on_progress)
    headers, rows = report.table()
    _emit([dict(zip(headers, row, strict=True)) for row in rows], OutputFormat.table,
          f"{report.name}: {report.model} ({report.lang})", headers)
    for warning in report.warnings:
        out.print(f"[yellow]note:[/] {warning}")
    if report.verification is not None:
        v = report.verification
        out.print(f"Label agreement with {v.model_folder}: before filtering "
                  f"{_cell(v.agreement_before_filtering)}, written rows {_cell(v.agreement_written)}")
    if report.rows_per_minute:
        out.print(f"{report.rows_per_minute:.1f} rows/minute (model load {report.load_s:.0f}s excluded)")
    out.print(f"Wrote {report.produced} rows -> [bold]{report.output_csv}[/] (metadata: {report.metadata_json})")


@app.command("list-models")
@handle_errors
def list_models(fmt: Format = OutputFormat.table, artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS) -> None:
    """The model configs in model_configs/ (add a model by dropping a JSON file there)."""
    _emit(_application(artifacts_dir).list_models(), fmt, "model configs",
          ["name", "class", "model_name", "description", "experiment"])


@app.command("list-experiments")
@handle_errors
def list_experiments(fmt: Format = OutputFormat.table, artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS) -> None:
    """Experiments, which stages each model has done, and its headline macro-F1."""
    rows = _application(artifacts_dir).list_experiments()
    if not rows and fmt is OutputFormat.table:
        out.print(f"No experiments under {artifacts_dir}; create one with `cli generate-splits`.")
        return
    _emit(rows, fmt, "experiments", ["experiment_id", "rows", "labels", "model", "stages", "backtesting_macro_f1",
                                     "holdout_macro_f1", "final_model"])


@app.command("compare-models")
@handle_errors
def compare_models_command(
    experiment_id: ExperimentId,
    run_type: Annotated[RunTypeOption, typer.Option("--run-type")] = RunTypeOption.backtesting,
    baseline: Annotated[
        Optional[str], typer.Option("--baseline", help="The model the others are tested against (default: the best-ranked).")
    ] = None,
    metric: Annotated[
        MetricOption, typer.Option("--metric", help="Rank and test by this metric.")
    ] = MetricOption.macro_f1,
    rope: Annotated[
        float, typer.Option("--rope", min=0.0, help="Region of practical equivalence: |diff| <= rope counts as equal.")
    ] = 0.01,
    fmt: Format = OutputFormat.table,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Models of an experiment ranked by a metric's mean, each tested against a baseline on the same folds."""
    from mlops.experiment_service import RunType

    rows = _application(artifacts_dir).compare_models(experiment_id, RunType(run_type.value), metric=metric.value,
                                                      baseline=baseline, rope=rope)
    title = f"{run_type.value} on {experiment_id}, ranked by {metric.value}"
    if fmt is not OutputFormat.table:
        _emit(rows, fmt, title, ["rank", *[key for key in rows[0] if key != "rank"]])
        return

    def signed(value: float | None) -> str | None:
        return None if value is None else f"{value:+.4f}"

    def p_value(value: float | None) -> str | None:
        return None if value is None else "<0.0001" if value < 1e-4 else f"{value:.4f}"

    single = "mcnemar_p_value" in rows[0]
    shown = []
    for row in rows:
        cells = {key: row[key] for key in ("rank", "model", "n_folds", "macro_f1_mean", "macro_f1_std", "accuracy_mean",
                                           "accuracy_std", f"{metric.value}_per_fold")
                 if (key != "accuracy_std" or metric is MetricOption.accuracy)
                 and not (single and key.endswith(("_std", "_per_fold")))}  # one fold: std 0, per fold = mean
        cells["diff"] = "baseline" if row["note"] == "baseline" else signed(row["diff_mean"])
        if single:
            cells.update({"n test": row["n_test"], "95% CI": _interval(row[f"{metric.value}_ci"], 3),
                          "b (model right)": row["n_discordant_model_right"],
                          "c (baseline right)": row["n_discordant_baseline_right"],
                          "McNemar p": p_value(row["mcnemar_p_value"])})
        else:
            ci = None if row["diff_ci_low"] is None else f"[{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"
            cells.update({"95% CI": ci, "p": p_value(row["p_value"]), "P(better)": row["prob_better"],
                          "P(equal)": row["prob_rope"], "P(worse)": row["prob_worse"]})
        shown.append(cells)
    _emit(shown, OutputFormat.table, title)
    for row in rows:
        if row.get("caveat"):
            out.print(f"[yellow]{row['model']}: {row['caveat']}[/]")
    base = rows[0]["baseline"]
    if single:
        out.print(f"diff = model - baseline ({base}) {metric.value} on the one shared test split; b, c: test rows only "
                  "the model / only the baseline got right; McNemar p: exact binomial test on b and c. One fold has "
                  "no variance across folds, so no t-test or Bayesian probabilities (backtest with several folds); "
                  f"the 95% CI is each model's own {metric.value} (Wilson for accuracy, bootstrap of 1,000 resamples for "
                  "macro-F1).")
    else:
        out.print(f"diff = model - baseline ({base}) {metric.value}, mean over paired folds, with its 95% interval; "
                  "p: corrected resampled t-test (Nadeau & Bengio 2003); P(better/equal/worse): Bayesian correlated "
                  f"t-test (Benavoli et al. 2017), ROPE ±{rope:g}")


class ReportFormatOption(str, Enum):
    html = "html"
    md = "md"


@app.command("report")
@handle_errors
def report(
    experiment_id: ExperimentId,
    output: Annotated[Optional[Path], typer.Option(
        "--output", dir_okay=False, help="Default: <artifacts>/experiments/<id>/reports/report.<format>.")] = None,
    fmt: Annotated[ReportFormatOption, typer.Option(
        "--format", help="html: one self-contained file; md: Markdown with PNG files beside it.")] = ReportFormatOption.html,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --output file.")] = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Plots and fold-paired statistics of an experiment: data, comparison, confusion, calibration, curves."""
    result = _application(artifacts_dir).report(experiment_id, output=output, fmt=fmt.value, force=force)
    out.print(f"Report ({len(result.sections)} sections, {result.images} images) -> [bold]{result.path}[/]")
    out.print(f"Images in {result.images_dir}")


@app.command("serve")
@handle_errors
def serve(
    model_path: Annotated[Path, typer.Option("--model-path", help="A folder written by train-final-model.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Texts scored together at most.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, help="How long a request waits for others.")] = 5.0,
    max_texts: Annotated[int, typer.Option("--max-texts", min=1, help="Texts per request at most.")] = 256,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Characters per text at most.")] = 10_000,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest CSV upload.")] = 100.0,
    api_key_env: Annotated[Optional[str], typer.Option(
        "--api-key-env", help="Name of an environment variable holding an API key; every endpoint but /health then "
                              "needs 'Authorization: Bearer <key>'.")] = None,
    runtime: Annotated[RuntimeOption, typer.Option(
        "--runtime", help="auto: the model's ONNX export on the CPU when there is one, else torch.")] = RuntimeOption.auto,
    device: Device = None,
    allow_external_models: AllowExternal = False,
) -> None:
    """Serve a model over HTTP: /predict, /predict/csv, /health, /ready, /info, /metrics (micro-batched)."""
    from mlops.errors import ConfigError

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set or empty; set it "
                              "to the key clients must send, or drop --api-key-env.")
    import uvicorn

    from mlops.serving.server import ServeSettings

    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_texts=max_texts,
                             max_chars=max_chars, max_upload_bytes=int(max_upload_mb * 1024 * 1024), api_key=api_key)
    server_app = _application(DEFAULT_ARTIFACTS, device, allow_external_models).serving_app(
        model_path, runtime.value, settings)
    out.print(f"Serving {model_path} on http://{host}:{port} (docs at /docs; Ctrl-C or SIGTERM stops it)")
    uvicorn.run(server_app, host=host, port=port, log_level="warning" if _State.quiet else "info",
                timeout_graceful_shutdown=30)


@app.command("quickstart")
@handle_errors
def quickstart(
    experiment_id: Annotated[str, typer.Option("--experiment-id")] = "quickstart",
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Model configs to compare (repeatable).")] = None,
    cv_folds: Annotated[int, typer.Option("--cv-folds")] = 3,
    force: Force = False,
    device: Device = None,
    track: Track = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="No ONNX export of the final model.")] = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """The whole lifecycle on the bundled MR movie-review sample, offline, in a few minutes."""
    from mlops.app import QUICKSTART_MODELS

    application = _application(artifacts_dir, device, track=track)
    models = model or [m for m in QUICKSTART_MODELS if m in application.catalog.names()]
    result = application.quickstart(experiment_id, models, cv_folds=cv_folds, force=force, export=not no_export)
    _emit(result.backtesting, OutputFormat.table, f"backtesting ({cv_folds}-fold) on {experiment_id}",
          ["rank", "model", "macro_f1_mean", "macro_f1_std", "accuracy_mean", "macro_f1_per_fold"])
    _emit([{"model": name, "accuracy": m["accuracy"], "accuracy 95% CI": _interval(m.get("accuracy_ci"), 3),
            "macro_f1": m["macro_f1"], "macro_f1 95% CI": _interval(m.get("macro_f1_ci"), 3), "n": m["n"]}
           for name, m in result.estimates.items()], OutputFormat.table, "hold-out estimate (train-val -> hold-out)")
    for note in result.notes:
        out.print(note)
    out.print(f"Final model: [bold]{result.final_model.model_dir}[/]")
    out.print(f"Predictions for {result.predictions.rows} unseen reviews: {result.predictions.output_file}")
    if result.new_data_metrics:
        out.print(f"Accuracy on those unseen reviews: {result.new_data_metrics['accuracy']:.4f} "
                  f"(macro-F1 {result.new_data_metrics['macro_f1']:.4f})")


def run() -> None:
    app()


if __name__ == "__main__":
    run()
