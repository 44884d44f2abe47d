"""Writing the report: collect the experiment, build its sections, render HTML or Markdown, write the PNGs.

matplotlib is imported only by ``mlops.core.plots``, which only this command loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlops.core.errors import ExperimentError
from mlops.core.io import staged_directory, write_text_atomic
from mlops.experiments.service import ExperimentService, RunType

logger = logging.getLogger(__name__)

ReportFormat = Literal["html", "md"]
REPORTS_DIR = "reports"
COMPARISON_NOTE = ("diff = model minus the baseline (the best-ranked model) in macro-F1, paired fold by fold, with "
                   "a 95% interval; p: corrected resampled t-test (Nadeau & Bengio 2003), a small p says the difference is "
                   "real; P(better) / P(equivalent) / P(worse): Bayesian correlated t-test (Benavoli et al. 2017), the "
                   "probability that the model is better than the baseline, practically equivalent (within ±0.01) or "
                   "worse.")


@dataclass
class ReportResult:
    path: Path
    images_dir: Path
    sections: list[str]
    images: int


def _comparisons(service: ExperimentService, experiment_id: str, holdout_metrics: dict[str, dict[str, Any]]):
    """(backtesting rows, their note, hold-out rows): compare-models' output, or None where there is none."""
    from mlops.evaluation.comparison import compare_models

    try:
        backtesting = compare_models(service, experiment_id, RunType.backtesting)
    except ExperimentError as exc:
        logger.info("no backtesting comparison in the report: %s", exc)
        backtesting = None
    holdout = None
    if holdout_metrics:
        try:
            tested = {row["model"]: row for row in compare_models(service, experiment_id,
                                                                  RunType.performance_estimation)}
        except ExperimentError as exc:
            logger.info("no hold-out comparison in the report: %s", exc)
            tested = {}
        holdout = [{"model": name, **{k: m.get(k) for k in ("n", "accuracy", "macro_f1", "log_loss")},
                    **{k: tested.get(name, {}).get(k) for k in ("diff_mean", "mcnemar_p_value")}}
                   for name, m in holdout_metrics.items()]
    return backtesting, COMPARISON_NOTE if backtesting else None, holdout


def write_report(service: ExperimentService, experiment_id: str, *, output: Path | None = None,
                 fmt: ReportFormat = "html", force: bool = False) -> ReportResult:
    """Write the report of ``experiment_id``; PNGs always also go to ``<experiment>/reports/``."""
    from mlops.evaluation.report import sections as build_sections
    from mlops.evaluation.report.collect import collect
    from mlops.evaluation.report.document import to_html, to_markdown

    view = collect(service, experiment_id)
    reports = view.experiment.directory / REPORTS_DIR
    default = reports / f"report.{fmt}"
    output = Path(output) if output else default
    if output.exists() and output.resolve() != default.resolve() and not force:
        raise ExperimentError(f"{output} already exists; pass --force to replace it or choose another --output.")
    if output.is_dir():
        raise ExperimentError(f"--output {output} is a folder; pass a file path such as {output / ('report.' + fmt)}.")
    holdout_metrics = {m.name: m.holdout.folds[0]["metrics"] for m in view.models if m.holdout}
    comparison, note, holdout = _comparisons(service, experiment_id, holdout_metrics)
    sections = build_sections.build(view, comparison, note, holdout)
    images = [image for section in sections for image in section.images()]
    title = f"Experiment {experiment_id}"
    _write_images(reports / "images", images)
    images_dir = reports / "images"
    if fmt == "md":
        images_dir = output.parent / f"{output.stem}_images"
        if images_dir.resolve() != (reports / "images").resolve():
            _write_images(images_dir, images)
        text = to_markdown(title, sections, images_dir.name)
    else:
        text = to_html(title, sections)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, text)
    logger.info("report written to %s (%d images, also in %s)", output, len(images), reports / "images")
    return ReportResult(output, images_dir, [s.title for s in sections], len(images))


def _write_images(directory: Path, images) -> None:
    """All the report's PNGs, replacing the folder's earlier ones at once."""
    with staged_directory(directory, replace=True) as scratch:
        for image in images:
            (scratch / f"{image.name}.png").write_bytes(image.png)
