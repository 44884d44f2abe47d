"""The Application facade: one thin method per CLI command, wiring the services together."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.artifacts import LoadedModel, Runtime, load_model
from mlops.catalog import DEFAULT_CONFIG_DIR, ModelCatalog
from mlops.errors import ConfigError, DataError, ExperimentError
from mlops.experiment_service import METRICS_FILE, Columns, Experiment, ExperimentService, RunType
from mlops.export import ExportResult, export_model
from mlops.io import read_json
from mlops.prediction import (DEFAULT_CHUNK_ROWS, PredictionSummary, estimate_data_rows, evaluate_predictions,
                              predict_file, predict_texts)
from mlops.provenance import PROJECT_ROOT
from mlops.reporting import compare_models, experiment_rows
from mlops.runner import ExperimentRunner, FinalModelResult, RunResult
from mlops.splitting import BacktestingStrategy, SplitParameters
from mlops.tracking.session import make_tracking

logger = logging.getLogger(__name__)

SAMPLE_DATA = PROJECT_ROOT / "data" / "sample" / "mr_sample.csv"
SAMPLE_NEW_DATA = PROJECT_ROOT / "data" / "sample" / "new_reviews.csv"
SAMPLE_NEW_LABELS = PROJECT_ROOT / "data" / "sample" / "new_reviews_labels.csv"
QUICKSTART_MODELS = ("tfidf_logreg", "minilm")


@dataclass
class QuickstartResult:
    experiment_id: str
    backtesting: list[dict[str, Any]]
    estimates: dict[str, dict[str, Any]]
    final_model: FinalModelResult
    predictions: PredictionSummary
    new_data_metrics: dict[str, Any] | None
    reused_experiment: bool = False
    notes: list[str] = field(default_factory=list)


class Application:
    def __init__(
        self,
        artifacts_dir: Path,
        *,
        config_dir: Path = DEFAULT_CONFIG_DIR,
        allow_external_models: bool = False,
        device: str | None = None,
        track: list[str] | None = None,
    ) -> None:
        self.service = ExperimentService(artifacts_dir)
        self.catalog = ModelCatalog(config_dir, allow_external=allow_external_models)
        self.runner = ExperimentRunner(self.service, device=device, tracking=make_tracking(track, artifacts_dir))
        self.allow_external_models = allow_external_models
        self.device = device

    def generate_splits(self, experiment_id: str, input_file: Path, columns: Columns, params: SplitParameters, *,
                        encoding: str = "utf-8", strict: bool = False, force: bool = False) -> Experiment:
        return self.service.create_experiment(experiment_id, input_file, columns, params, encoding=encoding,
                                              strict=strict, force=force)

    def run_backtesting(self, experiment_id: str, model_config_name: str, *, force: bool = False) -> RunResult:
        self.service.load_experiment(experiment_id)
        return self.runner.run_backtesting(experiment_id, self.catalog.resolve(model_config_name), force=force)

    def estimate_performance(self, experiment_id: str, model_config_name: str, *, force: bool = False) -> RunResult:
        self.service.load_experiment(experiment_id)
        return self.runner.estimate_performance(experiment_id, self.catalog.resolve(model_config_name), force=force)

    def train_final_model(self, experiment_id: str, model_config_name: str, *, model_output_dir: Path | None = None,
                          force: bool = False) -> FinalModelResult:
        self.service.load_experiment(experiment_id)
        return self.runner.train_final_model(experiment_id, self.catalog.resolve(model_config_name),
                                             model_output_dir=model_output_dir, force=force)

    def load_model(self, model_path: Path, runtime: Runtime = "auto") -> LoadedModel:
        return load_model(model_path, runtime=runtime, device=self.device, allow_external=self.allow_external_models)

    def export_model(self, model_path: Path, **options) -> ExportResult:
        return export_model(model_path, allow_external=self.allow_external_models, **options)

    def predict_new(self, model_path: Path, input_file: Path, output_file: Path | None, *, text_column: str = "text",
                    text_pair_column: str | None = None, encoding: str = "utf-8", force: bool = False,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, runtime: Runtime = "auto", on_start=None,
                    on_progress=None) -> PredictionSummary:
        output_file = output_file or self.default_prediction_path(input_file)
        if not Path(input_file).is_file():  # cheap checks before the (possibly slow) model load
            raise DataError(f"input file {input_file} does not exist; check --input-file.")
        if Path(output_file).exists() and not force:
            raise ExperimentError(f"{output_file} already exists; pass --force to overwrite it or choose --output-file.")
        loaded = self.load_model(model_path, runtime)
        if on_start:
            on_start(estimate_data_rows(Path(input_file)) if Path(input_file).is_file() else None)
        return predict_file(loaded, input_file, output_file, text_column=text_column,
                            text_pair_column=text_pair_column, encoding=encoding, chunk_rows=chunk_rows,
                            force=force, on_progress=on_progress)

    def default_prediction_path(self, input_file: Path) -> Path:
        return self.service.artifacts_dir / "predictions" / f"{Path(input_file).stem}_predictions.csv"

    def predict_text(self, model_path: Path, text: str, text_pair: str | None = None, runtime: Runtime = "auto"):
        loaded = self.load_model(model_path, runtime)
        return predict_texts(loaded, [text], [text_pair] if text_pair is not None else None)[0]

    def evaluate_prediction(self, predictions_file: Path, ground_truth_file: Path, **options) -> dict[str, Any]:
        return evaluate_predictions(predictions_file, ground_truth_file, **options)

    def list_models(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.catalog.names():
            try:
                entry = self.catalog.entry(name)
            except ConfigError as exc:
                rows.append({"name": name, "class": None, "model_name": None, "description": f"INVALID: {exc}"})
                continue
            rows.append({"name": name, "class": f"{entry.config.module_path}.{entry.config.class_name}",
                         "model_name": entry.config.model_name, "description": entry.config.description})
        return rows

    def list_experiments(self) -> list[dict[str, Any]]:
        return experiment_rows(self.service)

    def compare_models(self, experiment_id: str, run_type: RunType, *, metric: str = "macro_f1",
                       baseline: str | None = None, rope: float = 0.01) -> list[dict[str, Any]]:
        return compare_models(self.service, experiment_id, run_type, metric=metric, baseline=baseline, rope=rope)

    def report(self, experiment_id: str, *, output: Path | None = None, fmt: str = "html", force: bool = False):
        from mlops.report.writer import write_report

        return write_report(self.service, experiment_id, output=output, fmt=fmt, force=force)

    def generate_data(self, request, progress=None):
        from data.generation import generate

        return generate(request, progress=progress)

    def quickstart(self, experiment_id: str, models: list[str], *, cv_folds: int = 3, force: bool = False,
                   seed: int = 42) -> QuickstartResult:
        """The whole lifecycle on the shipped MR sample: splits, backtests, estimates, final model, predictions."""
        params = SplitParameters(cv_folds=cv_folds, seed=seed, backtesting_strategy=BacktestingStrategy.cv)
        columns = Columns(text="text", target="label")
        reused = self._reuse_or_create(experiment_id, params, columns, force)
        notes = []
        for model in models:
            self.run_backtesting(experiment_id, model, force=force)
            self.estimate_performance(experiment_id, model, force=force)
        ranking = [row for row in self.compare_models(experiment_id, RunType.backtesting) if row["model"] in models]
        estimates = {row["model"]: self.service.run_dir(experiment_id, row["model"], RunType.performance_estimation)
                     for row in ranking}
        estimates = {name: read_json(path / METRICS_FILE)["metrics"] for name, path in estimates.items()}
        best = ranking[0]["model"]
        notes.append(f"final model: {best}, the best mean backtesting macro-F1")
        final = self.train_final_model(experiment_id, best, force=True)
        output = self.service.experiment_dir(experiment_id) / "new_reviews_predictions.csv"
        predictions = self.predict_new(final.model_dir, SAMPLE_NEW_DATA, output, force=True)
        new_metrics = None
        if SAMPLE_NEW_LABELS.is_file():
            new_metrics = self.evaluate_prediction(output, SAMPLE_NEW_LABELS, id_column="id")
        return QuickstartResult(experiment_id, ranking, estimates, final, predictions, new_metrics, reused, notes)

    def _reuse_or_create(self, experiment_id: str, params: SplitParameters, columns: Columns, force: bool) -> bool:
        if experiment_id in self.service.experiment_ids() and not force:
            info = self.service.load_experiment(experiment_id).info
            if Path(info["input_file"]) == SAMPLE_DATA.resolve() and info["split_parameters"] == params.to_dict():
                logger.info("reusing experiment %s (same data and split parameters); completed folds are not "
                            "retrained (--force starts over)", experiment_id)
                return True
            raise ExperimentError(
                f"experiment {experiment_id!r} exists with other data or split parameters; pass --force to replace "
                "it or choose another --experiment-id."
            )
        self.generate_splits(experiment_id, SAMPLE_DATA, columns, params, force=force)
        return False
