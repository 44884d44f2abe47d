"""`cli quickstart`: the whole lifecycle on the bundled sample, with its plan, an estimate and a line per stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, emit, interval, out
from mlops.cli.options import ArtifactsDir, DEFAULT_ARTIFACTS, Device, Force, OutputFormat, Track

commands = typer.Typer()


def duration(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``; under a minute ``42 s``."""
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class StageLines:
    """Prints a line when each planned stage starts and one when it ends, with its time against the estimate."""

    def __init__(self, plan) -> None:
        self.stages = {stage.name: (i, stage) for i, stage in enumerate(plan.stages, 1)}
        self.total = len(plan.stages)

    @contextmanager
    def __call__(self, name: str):
        number, stage = self.stages[name]
        expected = f", expected about {duration(stage.estimate_s)}" if stage.estimate_s is not None else ""
        out.print(f"[bold][{number}/{self.total}] {name}[/]: {stage.detail}{expected}")
        started = time.perf_counter()
        yield
        out.print(f"[bold][{number}/{self.total}] {name}[/]: done in {duration(time.perf_counter() - started)}")


def print_plan(plan) -> None:
    estimate = plan.estimate_s
    speed = f" (this machine multiplies fp32 matrices at {plan.gflops:.0f} GFLOP/s)" if plan.gflops else ""
    when = f", about {duration(estimate)} here{speed}" if estimate is not None else ""
    out.print(f"[bold]Quickstart plan[/]: {len(plan.stages)} stages, {plan.trainings} trainings{when}")
    for number, stage in enumerate(plan.stages, 1):
        expected = duration(stage.estimate_s) if stage.estimate_s is not None else "-"
        trainings = f"{stage.trainings} training{'s' if stage.trainings != 1 else ''}" if stage.trainings else ""
        out.print(f"  {number}. {stage.name:<24} {stage.detail:<58} {trainings:<12} {expected:>12}")
    for note in plan.notes:
        out.print(f"  {note}")


@commands.command("quickstart")
def quickstart(
    experiment_id: Annotated[str, typer.Option("--experiment-id")] = "quickstart",
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", help="Model configs to compare (repeatable); default tfidf_logreg and minilm_quick.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Compare tfidf_logreg with minilm, the full encoder recipe (about 25 min on 2 CPU cores) "
                       "instead of minilm_quick (one epoch, lower layers frozen).")] = False,
    plan_only: Annotated[bool, typer.Option("--plan-only", help="Print the plan and its estimate; run nothing.")] = False,
    cv_folds: Annotated[int, typer.Option("--cv-folds")] = 3,
    force: Force = False,
    device: Device = None,
    track: Track = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="No ONNX export of the final model.")] = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """The whole lifecycle on the bundled MR movie-review sample, offline, in about five minutes on 2 CPU cores."""
    from mlops.experiments.quickstart import FULL_MODELS, QUICK_MODELS

    started = time.perf_counter()
    application = build_application(artifacts_dir, device, track=track)
    models = model or [m for m in (FULL_MODELS if full else QUICK_MODELS) if m in application.catalog.names()]
    plan = application.quickstart_plan(experiment_id, models, cv_folds=cv_folds, export=not no_export)
    print_plan(plan)
    if plan_only:
        return
    result = application.quickstart(experiment_id, models, cv_folds=cv_folds, force=force, export=not no_export,
                                    stage=StageLines(plan))
    _print_result(result, cv_folds, experiment_id)
    estimate = plan.estimate_s
    out.print(f"Quickstart finished in {duration(time.perf_counter() - started)}"
              + (f" (estimated {duration(estimate)})" if estimate is not None else ""))


def _print_result(result, cv_folds: int, experiment_id: str) -> None:
    emit(result.backtesting, OutputFormat.table, f"backtesting ({cv_folds}-fold) on {experiment_id}",
         ["rank", "model", "macro_f1_mean", "macro_f1_std", "accuracy_mean", "macro_f1_per_fold"])
    emit([{"model": name, "accuracy": m["accuracy"], "accuracy 95% CI": interval(m.get("accuracy_ci"), 3),
           "macro_f1": m["macro_f1"], "macro_f1 95% CI": interval(m.get("macro_f1_ci"), 3), "n": m["n"]}
          for name, m in result.estimates.items()], OutputFormat.table, "hold-out estimate (train-val -> hold-out)")
    for row in result.holdout_comparison:
        if row.get("mcnemar_p_value") is not None:
            out.print(f"Hold-out, {row['baseline']} against {row['model']}: {row['n_discordant_baseline_right']} rows "
                      f"only {row['baseline']} labels right, {row['n_discordant_model_right']} only {row['model']}; "
                      f"McNemar's exact p = {row['mcnemar_p_value']:.4f}")
    for note in result.notes:
        out.print(note)
    out.print(f"Final model: [bold]{result.final_model.model_dir}[/]")
    export = result.final_model.export
    if export and export.get("directory"):
        check = export["check"]
        out.print(f"ONNX export ({export['precision']}): same label as the model on {check['label_agreement']:.2%} of "
                  f"{check['rows']} held-back rows")
    out.print(f"Predictions for {result.predictions.rows} unseen reviews: {result.predictions.output_file}")
    if result.new_data_metrics:
        out.print(f"Accuracy on those unseen reviews: {result.new_data_metrics['accuracy']:.4f} "
                  f"(macro-F1 {result.new_data_metrics['macro_f1']:.4f})")
    out.print(f"Next: [bold]uv run cli report --experiment-id {experiment_id}[/] (plots, fold-paired statistics)")

