"""Label more, or stop? learning-curve, suggest-labels, active-learning-sim."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, cell, emit, err, out
from mlops.cli.options import (ArtifactsDir, DEFAULT_ARTIFACTS, Device, Encoding, ExperimentId, Force, ModelPath, OutputFormat, TextColumn)
from mlops.core.choices import Runtime

commands = typer.Typer()

FastConfig = Annotated[str, typer.Option(
    "--model-config-name", help="A config in model_configs/ (see list-models) or a .json path. Every point "
                                "trains again: a fine-tuned encoder takes hours on a CPU, TF-IDF and minilm_frozen "
                                "(MiniLM's embeddings, kept in memory) minutes.")]


class Strategy(str, Enum):
    entropy = "entropy"
    margin = "margin"
    least_confidence = "least-confidence"
    diverse = "diverse"
    random = "random"


def _steps(total: int, what: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                        transient=True)
    task = progress.add_task(what, total=total)
    return progress, lambda: progress.advance(task)


@commands.command("learning-curve")
def learning_curve(
    experiment_id: ExperimentId,
    model_config_name: FastConfig = "tfidf_logreg",
    fractions: Annotated[Optional[list[float]], typer.Option(
        "--fractions", help="Shares of each fold's training rows (nested, stratified); repeatable. Default: "
                            "0.125 0.25 0.5 1.")] = None,
    per_class: Annotated[Optional[list[int]], typer.Option(
        "--per-class", help="Instead of --fractions: this many rows of each class (few-shot sizes, nested; a class "
                            "with fewer rows gives all it has); repeatable, e.g. --per-class 8 --per-class 64.")
    ] = None,
    force: Force = False,
    device: Device = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Would more labels help? Each fold trained on nested subsets of its training rows, a fitted curve, and the
    predicted gain from doubling the labels."""
    app = build_application(artifacts_dir, device)
    n_folds = len(app.service.load_experiment(experiment_id).plan.backtesting)
    kind = "per_class" if per_class else "fraction"
    n_sizes = len(set(per_class or fractions or [0.125, 0.25, 0.5, 1.0]))
    progress, step = _steps(n_folds * n_sizes, f"learning curve (fold x {kind.replace('_', ' ')})")
    with progress:
        result = app.learning_curve(experiment_id, model_config_name, fractions, per_class=per_class, force=force,
                                    on_step=step)
    s = result.summary
    emit([{kind.replace("_", " "): r[kind], "rows": round(r["rows_mean"]), "macro_f1": cell(r["macro_f1_mean"]),
           "fold std": cell(r["macro_f1_std"]), "train s": cell(r["train_s_mean"])} for r in s["per_fraction"]],
         OutputFormat.table, f"learning curve of {s['model']} on {experiment_id} (mean over folds)")
    d = s["doubling"]
    if d["gain"] is not None:
        interval = (f" (95% interval {d['ci_low']:+.4f} to {d['ci_high']:+.4f}, folds resampled)"
                    if d["ci_low"] is not None else "")
        ceiling = f"; fitted ceiling {d['ceiling']:.3f}" if d["ceiling"] < 0.999 else ""  # at its bound: not an estimate
        out.print(f"Fitted a - b*n^-c: doubling the labels ({d['from_rows']:.0f} -> {d['to_rows']:.0f} rows per fold) "
                  f"gives macro-F1 {d['gain']:+.4f}{interval}{ceiling}.")
    else:
        out.print("The curve could not be fitted (it needs at least three fractions).")
    if (check := s["extrapolation_check"]) is not None:
        share = "sizes up to half the largest" if per_class else "fractions up to 0.5"
        out.print(f"Check: fitted on {share}, it predicts {check['predicted']:.4f} at the full rows; "
                  f"measured {check['measured']:.4f} (error {check['error']:+.4f}).")
    if result.resumed:
        out.print(f"Reused {result.resumed} finished (fold, size) runs; --force retrains them.")
    out.print(f"Wrote {result.directory} (summary.json, curve.png)")


@commands.command("suggest-labels")
def suggest_labels(
    model_path: ModelPath,
    input_file: Annotated[Path, typer.Option("--input-file", help="Unlabelled pool: CSV, TSV or Parquet (streamed).")],
    output_file: Annotated[Path, typer.Option("--output-file", help="CSV of the suggested rows.")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many rows to suggest.")] = 100,
    strategy: Annotated[Strategy, typer.Option("--strategy", help="entropy, margin, least-confidence, diverse "
                                                                   "(uncertain rows from different clusters) or random.")
                        ] = Strategy.diverse,
    text_column: TextColumn = "text",
    seed: Annotated[int, typer.Option("--seed")] = 42,
    runtime: Annotated[Runtime, typer.Option("--runtime", help="auto: the ONNX export on the CPU when there is one.")
                       ] = Runtime.auto,
    encoding: Encoding = "utf-8",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    device: Device = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """The rows of an unlabelled pool most worth labelling next, with the model's guess and scores."""
    result = build_application(artifacts_dir, device).suggest_labels(
        model_path, input_file, output_file, n=n, strategy=strategy.value, text_column=text_column,
        encoding=encoding, seed=seed, force=force, runtime=runtime.value)
    out.print(f"Ranked {result.pool_rows} pool rows by {result.strategy}; wrote the top {result.rows} -> "
              f"[bold]{result.output_file}[/] (rank, pool_row, your columns, score, predicted_label, proba_*).")


@commands.command("active-learning-sim")
def active_learning_sim(
    experiment_id: ExperimentId,
    model_config_name: FastConfig = "minilm_frozen",
    strategies: Annotated[Optional[list[Strategy]], typer.Option(
        "--strategy", help="Strategies to simulate (random is always added as the control); repeatable.")] = None,
    initial: Annotated[int, typer.Option("--initial", min=1, help="Labelled rows to start from (stratified).")] = 50,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Labels revealed per round.")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 10,
    force: Force = False,
    device: Device = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Which strategy needs the fewest labels? Rounds of suggest -> reveal -> retrain inside each fold."""
    from mlops.labelling.simulation import SimulationSettings

    chosen = [s.value for s in strategies] if strategies else ["entropy", "margin", "diverse"]
    settings = SimulationSettings(strategies=list(dict.fromkeys([*chosen, "random"])), initial=initial, batch=batch,
                                  rounds=rounds)
    app = build_application(artifacts_dir, device)
    n_folds = len(app.service.load_experiment(experiment_id).plan.backtesting)
    progress, step = _steps(n_folds * len(settings.strategies), "simulation (strategy x fold)")
    with progress:
        result = app.active_learning_sim(experiment_id, model_config_name, settings, force=force, on_step=step)
    s = result.summary
    rows = []
    for strategy, o in s["outcome"].items():
        stop = o["stop_hint"]
        rows.append({"strategy": strategy, "final macro_f1": cell(o["final_macro_f1"]),
                     "labels": round(o["final_labelled"]),
                     "labels to reach random's final": "-" if o["labels_to_reach_random_final"] is None
                     else f"{o['labels_to_reach_random_final']:.0f} ({o['share_of_random_labels']:.0%})",
                     "stop hint": "-" if stop is None else f"round {stop['round']}, {stop['labelled']:.0f} labels"})
    emit(rows, OutputFormat.table, f"active learning with {s['model']} on {experiment_id} (mean over folds; random "
         f"ends at {s['random_final_macro_f1']:.4f})")
    out.print(f"Wrote {result.directory} (summary.json with every round, curves.png)")
