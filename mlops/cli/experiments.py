"""Models and experiments: list-models, list-experiments, compare-models, report."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, emit, interval, out
from mlops.cli.options import ArtifactsDir, DEFAULT_ARTIFACTS, ExperimentId, Format, MetricOption, OutputFormat
from mlops.core.choices import RunType

commands = typer.Typer()


@commands.command("list-models")
def list_models(fmt: Format = OutputFormat.table, artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS) -> None:
    """The model configs in model_configs/ (add a model by dropping a JSON file there)."""
    emit(build_application(artifacts_dir).list_models(), fmt, "model configs",
          ["name", "class", "model_name", "description", "experiment"])


@commands.command("list-experiments")
def list_experiments(fmt: Format = OutputFormat.table, artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS) -> None:
    """Experiments, which stages each model has done, and its headline macro-F1."""
    rows = build_application(artifacts_dir).list_experiments()
    if not rows and fmt is OutputFormat.table:
        out.print(f"No experiments under {artifacts_dir}; create one with `cli generate-splits`.")
        return
    emit(rows, fmt, "experiments", ["experiment_id", "rows", "labels", "model", "stages", "backtesting_macro_f1",
                                     "holdout_macro_f1", "final_model"])


@commands.command("compare-models")
def compare_models_command(
    experiment_id: ExperimentId,
    run_type: Annotated[RunType, typer.Option("--run-type")] = RunType.backtesting,
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
    if run_type is RunType.final_model:
        from mlops.core.errors import ConfigError

        raise ConfigError("--run-type final_model: a final model has no test rows to compare on; choose backtesting "
                          "or performance_estimation.")
    rows = build_application(artifacts_dir).compare_models(experiment_id, run_type, metric=metric.value,
                                                           baseline=baseline, rope=rope)
    title = f"{run_type.value} on {experiment_id}, ranked by {metric.value}"
    if fmt is not OutputFormat.table:
        emit(rows, fmt, title, ["rank", *[key for key in rows[0] if key != "rank"]])
        return

    def signed(value: float | None) -> str | None:
        return None if value is None else f"{value:+.4f}"

    def p_value(value: float | None) -> str | None:
        return None if value is None else "<0.0001" if value < 1e-4 else f"{value:.4f}"

    single = "mcnemar_p_value" in rows[0]
    shown = []
    for row in rows:
        extra = () if metric.value in ("macro_f1", "accuracy") else (f"{metric.value}_mean",)
        cells = {key: row[key] for key in ("rank", "model", "n_folds", *extra, "macro_f1_mean", "macro_f1_std",
                                           "accuracy_mean", "accuracy_std", f"{metric.value}_per_fold")
                 if (key != "accuracy_std" or metric is MetricOption.accuracy)
                 and not (single and key.endswith(("_std", "_per_fold")))}  # one fold: std 0, per fold = mean
        cells["diff"] = "baseline" if row["note"] == "baseline" else signed(row["diff_mean"])
        if single:
            cells.update({"n test": row["n_test"], "95% CI": interval(row.get(f"{metric.value}_ci"), 3),
                          "b (model right)": row["n_discordant_model_right"],
                          "c (baseline right)": row["n_discordant_baseline_right"],
                          "McNemar p": p_value(row["mcnemar_p_value"])})
        else:
            ci = None if row["diff_ci_low"] is None else f"[{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"
            cells.update({"95% CI": ci, "p": p_value(row["p_value"]), "P(better)": row["prob_better"],
                          "P(equal)": row["prob_rope"], "P(worse)": row["prob_worse"]})
        shown.append(cells)
    emit(shown, OutputFormat.table, title)
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


@commands.command("report")
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
    result = build_application(artifacts_dir).report(experiment_id, output=output, fmt=fmt.value, force=force)
    out.print(f"Report ({len(result.sections)} sections, {result.images} images) -> [bold]{result.path}[/]")
    out.print(f"Images in {result.images_dir}")
