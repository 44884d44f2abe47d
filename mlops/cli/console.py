"""Terminal output shared by the commands: tables, JSON and CSV, run summaries; the Application builder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from mlops.cli.options import OutputFormat, TrackOption

if TYPE_CHECKING:
    from mlops.app import Application

# Piped output (files, CI logs) gets wide lines instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class State:
    """The global options of the callback (--verbose, --quiet, --wait), for the commands."""

    verbose = False
    wait = False
    quiet = False


def build_application(artifacts_dir: Path, device: str | None = None, allow_external: bool = False,
                      track: list[TrackOption] | None = None) -> Application:
    from mlops.app import Application

    return Application(artifacts_dir, device=device, allow_external_models=allow_external,
                       track=[t.value for t in track or []], wait_for_lock=State.wait)


def emit(rows: list[dict[str, Any]], fmt: OutputFormat, title: str, columns: list[str] | None = None) -> None:
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
        table.add_row(*[cell(row.get(c)) for c in columns])
    out.print(table)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def interval(bounds: list[float] | None, digits: int = 4) -> str | None:
    return None if bounds is None else f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def print_run(result) -> None:
    summary = result.summary
    names = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "ece") if "micro_f1" in summary \
        else ("accuracy", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1", "log_loss", "ece")
    rows = [{"metric": name, "mean": summary[name]["mean"], "std": summary[name]["std"],
             "per_fold": summary[name]["per_fold"]} for name in names]
    title = f"{result.run_type.value}: {result.config_name} on {result.experiment_id} ({summary['n_folds']} fold(s))"
    single = result.fold_metrics[0] if summary["n_folds"] == 1 else None
    if single is not None:  # one split: no spread across folds, so say how many rows and how sure
        for row in rows:
            row["95% CI"] = interval(single.get(f"{row['metric']}_ci"))
    emit(rows, OutputFormat.table, title)
    if single is not None:
        intervals = "95% CI: Wilson (accuracy), bootstrap of 1,000 resamples (macro-F1)"
        if "micro_f1" in summary:
            intervals = "no intervals for multi-label scores yet: read the per-label support in metrics.json"
        elif single.get("accuracy_ci") is None:
            intervals = "no intervals recorded (a fold from an older version; --force recomputes it)"
        out.print(f"One split of {single['n']} test rows; {intervals}.")
    if result.resumed_folds:
        out.print(f"Reused completed folds {[k + 1 for k in result.resumed_folds]} (pass --force to retrain them).")
    out.print(f"Results in {result.directory}")
