"""The lifecycle: generate-splits, run-backtesting, estimate-performance, train-final-model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, out, print_run
from mlops.cli.options import (AllowExternal, ArtifactsDir, DEFAULT_ARTIFACTS, Device, Encoding, Executor,
                               ExecutorOption, ExperimentId, Force, ModelConfigName, ModelConfigNames, RayAddress,
                               RaySharedData, TargetColumn, TextColumn, TextPairColumn, Track)
from mlops.core.choices import BacktestingStrategy, NearDuplicates

commands = typer.Typer()


@commands.command("generate-splits")
def generate_splits(
    experiment_id: ExperimentId,
    input_file: Annotated[Path, typer.Option("--input-file", help="Labelled CSV, TSV or Parquet file.")],
    text_column: TextColumn = "text",
    target_column: TargetColumn = "label",
    text_pair_column: TextPairColumn = None,
    group_column: Annotated[Optional[str], typer.Option("--group-column", help="Rows sharing it stay together.")] = None,
    test_size: Annotated[float, typer.Option("--test-size", help="Share of rows in the global hold-out.")] = 0.2,
    backtesting_strategy: Annotated[BacktestingStrategy, typer.Option("--backtesting-strategy")] = BacktestingStrategy.cv,
    cv_folds: Annotated[int, typer.Option("--cv-folds")] = 5,
    backtesting_val_size: Annotated[float, typer.Option("--backtesting-val-size", help="Val share of each fold's training part.")] = 0.1,
    backtesting_test_size: Annotated[float, typer.Option("--backtesting-test-size", help="Test share (train-val strategy).")] = 0.2,
    perf_estimation_val_size: Annotated[float, typer.Option("--perf-estimation-val-size")] = 0.1,
    final_model_val_size: Annotated[float, typer.Option("--final-model-val-size")] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    near_duplicates: Annotated[NearDuplicates, typer.Option(
        "--near-duplicates", help="Also keep near-duplicate texts on one side of every split: minhash (character "
                                  "shingles, Jaccard), embedding (MiniLM cosine, for paraphrases) or off.")
    ] = NearDuplicates.off,
    near_duplicate_threshold: Annotated[Optional[float], typer.Option(
        "--near-duplicate-threshold", help="Jaccard (minhash, default 0.8) or cosine (embedding, default 0.9) "
                                           "from which two texts count as near-duplicates.")] = None,
    encoding: Encoding = "utf-8",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on empty texts or labels instead of dropping them.")] = False,
    normalize_labels: Annotated[bool, typer.Option(
        "--normalize-labels", help="Merge labels that differ only by case or spacing ('Positive' / 'positive') into "
                                   "their most frequent spelling, instead of refusing them.")] = False,
    max_text_chars: Annotated[int, typer.Option(
        "--max-text-chars", min=0, help="Cut longer texts to this many characters (logged with a count); 0: no "
                                        "limit.")] = 20_000,
    label_separator: Annotated[Optional[str], typer.Option(
        "--label-separator", help="Multi-label: the target column holds several labels joined by this (e.g. '|'); "
                                  "splits use iterative stratification.")] = None,
    target_columns: Annotated[Optional[list[str]], typer.Option(
        "--target-columns", help="Multi-label: 0/1 columns, one per label (repeat the option); instead of "
                                 "--target-column.")] = None,
    allow_empty_labels: Annotated[bool, typer.Option(
        "--allow-empty-labels", help="Multi-label: keep rows with no label (\"none of these\") instead of dropping "
                                     "them.")] = False,
    force: Force = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Hold out a stratified test set, then plan the backtesting folds (no duplicate or group leakage)."""
    from mlops.data.splitting import SplitParameters
    from mlops.experiments.service import Columns

    task = _task(label_separator, target_columns, allow_empty_labels)

    params = SplitParameters(
        test_size=test_size, backtesting_strategy=backtesting_strategy, cv_folds=cv_folds,
        backtesting_val_size=backtesting_val_size, backtesting_test_size=backtesting_test_size,
        perf_estimation_val_size=perf_estimation_val_size, final_model_val_size=final_model_val_size, seed=seed,
        near_duplicates=near_duplicates.value, near_duplicate_threshold=near_duplicate_threshold,
    )
    columns = Columns(text=text_column, target=target_column, text_pair=text_pair_column, group=group_column)
    experiment = build_application(artifacts_dir).generate_splits(
        experiment_id, input_file, columns, params, encoding=encoding, strict=strict, force=force,
        normalize_labels=normalize_labels, max_text_chars=max_text_chars or None, task=task,
    )
    info = experiment.info
    sizes = info["split_sizes"]
    out.print(f"Experiment [bold]{experiment_id}[/]: {info['rows_used']} rows, labels {info['labels']}, "
              f"input sha256 {info['input_sha256'][:12]}")
    if "label_counts" in info:
        out.print(f"Multi-label: rows per label {info['label_counts']}; {info['rows_without_label']} rows with none.")
    if "near_duplicate_pairs" in info:
        out.print(f"Near-duplicates ({near_duplicates.value}): {info['near_duplicate_pairs']} pairs joined into groups.")
    if info["rows_dropped_empty"]:
        out.print(f"Dropped {info['rows_dropped_empty']} rows with an empty text or label (--strict fails instead).")
    out.print(f"Hold-out: {sizes['holdout_test']} rows; train-val: {sizes['train_val']} rows")
    for k, fold in enumerate(sizes["backtesting"]):
        out.print(f"  fold {k + 1}: train {fold['train']}, val {fold['val']}, test {fold['test']}")
    out.print(f"Final model: train {sizes['final_model']['train']}, val {sizes['final_model']['val']}")
    out.print(f"Saved to {experiment.directory}")


def _task(label_separator: str | None, target_columns: list[str] | None, allow_empty_labels: bool):
    """The multi-label task the options describe, or None (one label per row)."""
    from mlops.core.errors import DataError
    from mlops.core.multilabel import DEFAULT_SEPARATOR, MULTI_LABEL, Task

    if label_separator is not None and target_columns:
        raise DataError("--label-separator reads one column of joined labels and --target-columns reads one 0/1 "
                        "column per label; give one of them.")
    if label_separator == "":
        raise DataError("--label-separator must not be empty; '|' or ';' are usual.")
    multi = label_separator is not None or bool(target_columns)
    if allow_empty_labels and not multi:
        raise DataError("--allow-empty-labels is for multi-label data; add --label-separator or --target-columns.")
    return Task(MULTI_LABEL, separator=label_separator or DEFAULT_SEPARATOR, target_columns=tuple(target_columns or ()),
                allow_empty=allow_empty_labels) if multi else None


@commands.command("run-backtesting")
def run_backtesting(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigNames,
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
    application = build_application(artifacts_dir, device, allow_external_models, track)
    _print_runs(application.run_backtesting, experiment_id, model_config_name, force,
                _executor(executor, ray_address, ray_shared_data))


@commands.command("estimate-performance")
def estimate_performance(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigNames,
    force: Force = False,
    executor: Executor = ExecutorOption.local,
    ray_address: RayAddress = None,
    ray_shared_data: RaySharedData = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    track: Track = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Train on the train-val set and score once on the untouched global hold-out."""
    application = build_application(artifacts_dir, device, allow_external_models, track)
    _print_runs(application.estimate_performance, experiment_id, model_config_name, force,
                _executor(executor, ray_address, ray_shared_data))


def _executor(kind: ExecutorOption, ray_address: str | None, shared_data: bool):
    from mlops.executors import ExecutorOptions

    return ExecutorOptions(kind.value, ray_address, shared_data)


def _print_runs(run, experiment_id: str, names: list[str], force: bool, executor) -> None:
    """Run ``run`` (the facade's backtesting or estimate method) on each named config and print each result."""
    for result in run(experiment_id, names, force=force, executor=executor):
        print_run(result)


@commands.command("train-final-model")
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
    application = build_application(artifacts_dir, device, allow_external_models, track)
    result = application.train_final_model(experiment_id, model_config_name, model_output_dir=model_output_dir,
                                           force=force, export=not no_export)
    if result.validation_metrics:
        out.print(f"Validation (early-stopping split, optimistic): accuracy {result.validation_metrics['accuracy']:.4f}, "
                  f"macro-F1 {result.validation_metrics['macro_f1']:.4f}")
    out.print(f"Model saved to [bold]{result.model_dir}[/]")
    if result.export and result.export.get("directory"):
        check = result.export["check"]
        out.print(f"ONNX export ({result.export['precision']}) in {result.model_dir / result.export['directory']}: "
                  f"same label as the model on {check['label_agreement']:.2%} of {check['rows']} held-back rows; "
                  "predict-new and serve use it on the CPU (--runtime torch for the torch model)")
