"""Using a final model: predict-new, evaluate-prediction, export-model, serve."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlops.cli.console import State, build_application, cell, emit, err, out
from mlops.cli.options import (AllowExternal, ArtifactsDir, DEFAULT_ARTIFACTS, Device, Encoding, Format, ModelPath,
                               OutputFormat, TargetColumn, TextColumn, TextPairColumn)
from mlops.core.choices import ExportPrecision, Runtime

commands = typer.Typer()


@commands.command("predict-new")
def predict_new(
    model_path: ModelPath,
    input_file: Annotated[Optional[Path], typer.Option("--input-file", help="CSV/Parquet to label.")] = None,
    output_file: Annotated[Optional[Path], typer.Option("--output-file", help="Default: artifacts/predictions/<input>_predictions.csv")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Label one text and print the result.")] = None,
    text_pair: Annotated[Optional[str], typer.Option("--text-pair", help="With --text: its second text (pair models).")] = None,
    text_column: TextColumn = "text",
    text_pair_column: TextPairColumn = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows read and predicted at a time.")] = 4096,
    max_text_chars: Annotated[int, typer.Option(
        "--max-text-chars", min=0, help="The model sees each text cut to this many characters (counted in the "
                                        "log); 0: no limit. The output keeps the texts whole.")] = 20_000,
    encoding: Encoding = "utf-8",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    runtime: Annotated[Runtime, typer.Option(
        "--runtime", help="auto: the model's ONNX export (see export-model) when there is one and no GPU, "
                          "else torch.")] = Runtime.auto,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Label new data: the input's columns plus predicted_label and one proba_<label> column per class."""
    from mlops.core.errors import DataError

    application = build_application(artifacts_dir, device, allow_external_models)
    if (text is None) == (input_file is None):
        raise DataError("pass exactly one of --input-file (a file to label) or --text (one text).")
    if text is not None:
        label, probabilities = application.predict_text(model_path, text, text_pair, runtime.value)
        if isinstance(label, tuple):  # multi-label: the labels above their thresholds (maybe none)
            label = ", ".join(label) or "(no label)"
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


@commands.command("export-model")
def export_model(
    model_path: ModelPath,
    precision: Annotated[ExportPrecision, typer.Option(
        "--precision", help="auto: int8 if it passes the agreement check, else fp32; int8: fail instead of "
                            "falling back; fp32: exact.")] = ExportPrecision.auto,
    data_file: Annotated[Optional[Path], typer.Option(
        "--data-file", help="Rows to calibrate and check on (default: the model's training file).")] = None,
    text_column: Annotated[Optional[str], typer.Option("--text-column", help="Default: as in training.")] = None,
    text_pair_column: TextPairColumn = None,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Check rows (plus up to 512 calibration rows).")] = 4000,
    min_agreement: Annotated[float, typer.Option(
        "--min-agreement", help="Share of check rows where int8 must give the fp32 model's label.")] = 0.995,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Default: <model-path>/onnx, "
                                                       "which predict-new uses automatically.")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", help="Default: as in training.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export.")] = False,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Export a trained encoder to ONNX Runtime (int8 or fp32) for faster CPU prediction and start-up."""
    application = build_application(artifacts_dir, None, allow_external_models)
    result = application.export_model(
        model_path, output_dir=output_dir, precision=precision.value, data_file=data_file, text_column=text_column,
        text_pair_column=text_pair_column, encoding=encoding, rows=rows, min_agreement=min_agreement, force=force)
    check = result.check
    out.print(f"ONNX export ({result.precision}) -> [bold]{result.directory}[/] in {result.seconds:.0f} s; same label "
              f"as the fp32 model on {check['label_agreement']:.2%} of {check['rows']} check rows "
              f"(max |dp| {check['max_abs_probability_difference']:.4f})")


@commands.command("evaluate-prediction")
def evaluate_prediction(
    predictions_file: Annotated[Path, typer.Option("--predictions-file")],
    ground_truth_file: Annotated[Path, typer.Option("--ground-truth-file")],
    prediction_column: Annotated[str, typer.Option("--prediction-column")] = "predicted_label",
    target_column: TargetColumn = "label",
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="Match rows by this column, not by position.")] = None,
    label_separator: Annotated[Optional[str], typer.Option(
        "--label-separator", help="Multi-label: both columns hold label sets joined by this; the prediction column "
                                  "defaults to predicted_labels.")] = None,
    encoding: Encoding = "utf-8",
    fmt: Format = OutputFormat.table,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Metrics of a predictions file against a labelled file."""
    metrics = build_application(artifacts_dir).evaluate_prediction(
        predictions_file, ground_truth_file, prediction_column=prediction_column, target_column=target_column,
        id_column=id_column, encoding=encoding, label_separator=label_separator)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    multi = "micro_f1" in metrics
    names = (("n", "micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss") if multi else
             ("n", "accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1"))
    emit([{"metric": k, "value": metrics[k]} for k in names], fmt, "prediction metrics")
    if fmt is OutputFormat.table:
        if multi:
            emit([{"label": label, **{k: cell(v[k]) for k in ("precision", "recall", "f1-score", "support")}}
                  for label, v in metrics["per_class"].items()], OutputFormat.table, "per label")
        else:
            _print_confusion(metrics["confusion_matrix"])


def _print_confusion(confusion: dict[str, Any]) -> None:
    labels = confusion["labels"]
    rows = [{"true \\ predicted": label, **{p: str(v) for p, v in zip(labels, row, strict=True)}}
            for label, row in zip(labels, confusion["matrix"], strict=True)]
    emit(rows, OutputFormat.table, "confusion matrix")


@commands.command("serve")
def serve(
    model_path: ModelPath,
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
    runtime: Annotated[Runtime, typer.Option(
        "--runtime", help="auto: the model's ONNX export on the CPU when there is one, else torch.")] = Runtime.auto,
    grace_seconds: Annotated[float, typer.Option(
        "--grace-seconds", min=1.0, help="After SIGTERM: how long requests already held may take; then what is "
                                         "still queued gets 503 and CSV streams stop short of X-Row-Count.")] = 30.0,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Serve a model over HTTP: /predict, /predict/csv, /health, /ready, /info, /metrics (micro-batched)."""
    from mlops.core.errors import ConfigError

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set or empty; set it "
                              "to the key clients must send, or drop --api-key-env.")
    from mlops.deploy.serving.drain import run_server
    from mlops.deploy.serving.server import ServeSettings

    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_texts=max_texts,
                             max_chars=max_chars, max_upload_bytes=int(max_upload_mb * 1024 * 1024), api_key=api_key,
                             grace_seconds=grace_seconds)
    server_app = build_application(artifacts_dir, device, allow_external_models).serving_app(
        model_path, runtime.value, settings)
    out.print(f"Serving {model_path} on http://{host}:{port} (docs at /docs; Ctrl-C or SIGTERM stops it, "
              f"{grace_seconds:g} s of grace)")
    run_server(server_app, server_app.state.drain, host=host, port=port,
               log_level="warning" if State.quiet else "info")
