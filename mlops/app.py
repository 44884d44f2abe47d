"""The Application facade: one thin method per CLI command, wiring the services together."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.catalog import DEFAULT_CONFIG_DIR, ModelCatalog
from mlops.core.errors import ConfigError, DataError, ExperimentError
from mlops.core.io import check_writable_directory, read_json
from mlops.core.model_folder import LoadedModel, Runtime, load_model
from mlops.core.multilabel import Task
from mlops.core.plugins import NamedConfig
from mlops.core.provenance import PROJECT_ROOT
from mlops.data.splitting import BacktestingStrategy, SplitParameters
from mlops.data.tables import DEFAULT_MAX_TEXT_CHARS
from mlops.executors import ExecutorOptions, executor_for
from mlops.experiments.runner import ExperimentRunner, FinalModelResult, RunResult
from mlops.experiments.service import METRICS_FILE, Columns, Experiment, ExperimentService, RunType
from mlops.tracking.session import make_tracking

if TYPE_CHECKING:  # the services below are imported by the methods that use them, so a command loads only its own
    from mlops.audit.service import AuditResult, AuditSettings
    from mlops.labelling.service import CurveResult
    from mlops.labelling.simulation import SimulationSettings
    from mlops.labelling.suggest import Suggestions
    from mlops.augment.pseudo_label import PseudoLabelSettings
    from mlops.augment.pseudo_label_files import PseudoLabelSummary
    from mlops.deploy.export import ExportResult
    from mlops.deploy.prediction import PredictionSummary
    from mlops.experiments.quickstart import QuickstartPlan

logger = logging.getLogger(__name__)

SAMPLE_DATA = PROJECT_ROOT / "data" / "sample" / "mr_sample.csv"
SAMPLE_NEW_DATA = PROJECT_ROOT / "data" / "sample" / "new_reviews.csv"
SAMPLE_NEW_LABELS = PROJECT_ROOT / "data" / "sample" / "new_reviews_labels.csv"


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
    holdout_comparison: list[dict[str, Any]] = field(default_factory=list)  # McNemar against the best model


def _writes(command: str):
    """Run the method (whose first argument is the experiment id) holding the experiment's lock, so a second
    writer of the same experiment is refused naming this command, or waits (``wait_for_lock``). The other
    ranks of a distributed launch (torchrun) write nothing and take no lock."""
    def wrap(method):
        @functools.wraps(method)
        def locked(self, experiment_id: str, *args, **kwargs):
            if not self.runner.writes:
                return method(self, experiment_id, *args, **kwargs)
            first = args[0] if args else None
            names = first if isinstance(first, list) else [first] if isinstance(first, str) else []
            line = " ".join([f"cli {command} --experiment-id {experiment_id}",
                             *(f"--model-config-name {name}" for name in names)])
            with self.service.lock(experiment_id, line, wait=self.wait_for_lock):
                return method(self, experiment_id, *args, **kwargs)
        return locked
    return wrap


class Application:
    def __init__(
        self,
        artifacts_dir: Path,
        *,
        config_dir: Path = DEFAULT_CONFIG_DIR,
        allow_external_models: bool = False,
        device: str | None = None,
        track: list[str] | None = None,
        wait_for_lock: bool = False,
    ) -> None:
        self.service = ExperimentService(artifacts_dir)
        self.catalog = ModelCatalog(config_dir, allow_external=allow_external_models)
        self.runner = ExperimentRunner(self.service, device=device, tracking=make_tracking(track, artifacts_dir))
        self.allow_external_models = allow_external_models
        self.device = device
        self.wait_for_lock = wait_for_lock

    @_writes("generate-splits")
    def generate_splits(self, experiment_id: str, input_file: Path, columns: Columns, params: SplitParameters, *,
                        encoding: str = "utf-8", strict: bool = False, force: bool = False,
                        normalize_labels: bool = False, max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
                        task: Task | None = None) -> Experiment:
        return self.service.create_experiment(experiment_id, input_file, columns, params, encoding=encoding,
                                              strict=strict, force=force, normalize_labels=normalize_labels,
                                              max_text_chars=max_text_chars, task=task)

    @_writes("run-backtesting")
    def run_backtesting(self, experiment_id: str, model_config_names: list[str], *, force: bool = False,
                        executor: ExecutorOptions | None = None) -> list[RunResult]:
        """Backtest each config; with ``ExecutorOptions("ray")`` every (config, fold) is a Ray task."""
        return self._run(experiment_id, model_config_names, RunType.backtesting, force, executor)

    @_writes("estimate-performance")
    def estimate_performance(self, experiment_id: str, model_config_names: list[str], *, force: bool = False,
                             executor: ExecutorOptions | None = None) -> list[RunResult]:
        """Train each config on train-val and score it once on the untouched hold-out."""
        return self._run(experiment_id, model_config_names, RunType.performance_estimation, force, executor)

    def _run(self, experiment_id: str, names: list[str], run_type: RunType, force: bool,
             options: ExecutorOptions | None) -> list[RunResult]:
        experiment = self.service.load_experiment(experiment_id)
        configs = [self.resolve_config(experiment_id, name) for name in names]
        return self.runner.run(experiment, configs, run_type, force=force, executor=executor_for(options))

    @_writes("train-final-model")
    def train_final_model(self, experiment_id: str, model_config_name: str, *, model_output_dir: Path | None = None,
                          force: bool = False, export: bool = True) -> FinalModelResult:
        """Train and save the final model; an encoder also gets its checked ONNX export (``export=False`` skips it)."""
        experiment = self.service.load_experiment(experiment_id)
        named = self.resolve_config(experiment_id, model_config_name)
        result = self.runner.train_final_model(experiment, named, model_output_dir=model_output_dir, force=force)
        from mlops.deploy.export import export_after_training, supports_export

        if export and self.device in (None, "cpu") and supports_export(named.model_class) and self.runner.writes:
            result.export = export_after_training(result.model_dir, Path(experiment.info["input_file"]),
                                                  allow_external=self.allow_external_models)
        return result

    def load_model(self, model_path: Path, runtime: Runtime = "auto") -> LoadedModel:
        return load_model(model_path, runtime=runtime, device=self.device, allow_external=self.allow_external_models)

    def export_model(self, model_path: Path, **options) -> ExportResult:
        from mlops.deploy.export import export_model

        return export_model(model_path, allow_external=self.allow_external_models, **options)

    def predict_new(self, model_path: Path, input_file: Path, output_file: Path | None, *, text_column: str = "text",
                    text_pair_column: str | None = None, encoding: str = "utf-8", force: bool = False,
                    chunk_rows: int | None = None, runtime: Runtime = "auto", on_start=None,
                    on_progress=None, max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> PredictionSummary:
        from mlops.deploy.prediction import DEFAULT_CHUNK_ROWS, estimate_data_rows, predict_file

        output_file = output_file or self.default_prediction_path(input_file)
        if not Path(input_file).is_file():  # cheap checks before the (possibly slow) model load
            raise DataError(f"input file {input_file} does not exist; check --input-file.")
        if Path(output_file).exists() and not force:
            raise ExperimentError(f"{output_file} already exists; pass --force to overwrite it or choose --output-file.")
        check_writable_directory(Path(output_file).parent, "--output-file")
        loaded = self.load_model(model_path, runtime)
        if on_start:
            on_start(estimate_data_rows(Path(input_file)) if Path(input_file).is_file() else None)
        return predict_file(loaded, input_file, output_file, text_column=text_column,
                            text_pair_column=text_pair_column, encoding=encoding, chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS,
                            force=force, on_progress=on_progress, max_text_chars=max_text_chars)

    def default_prediction_path(self, input_file: Path) -> Path:
        return self.service.artifacts_dir / "predictions" / f"{Path(input_file).stem}_predictions.csv"

    def predict_text(self, model_path: Path, text: str, text_pair: str | None = None, runtime: Runtime = "auto"):
        from mlops.deploy.prediction import predict_texts

        loaded = self.load_model(model_path, runtime)
        return predict_texts(loaded, [text], [text_pair] if text_pair is not None else None)[0]

    def pseudo_label(self, model_path: str, input_file: Path, output_file: Path, *, labelled_file: Path | None = None,
                     text_column: str = "text", target_column: str = "label",
                     settings: PseudoLabelSettings | None = None, batch_size: int = 64,
                     pooling: str = "mean", encoding: str = "utf-8", force: bool = False) -> PseudoLabelSummary:
        """``cli pseudo-label``: the rows are read and checked before the (slow) encoder load."""
        from mlops.augment.pseudo_label import PseudoLabelSettings
        from mlops.augment.pseudo_label_files import load_encoder, read_pseudo_label_rows, write_pseudo_labels

        settings = settings or PseudoLabelSettings()
        rows = read_pseudo_label_rows(input_file, output_file, labelled_file=labelled_file, text_column=text_column,
                                      target_column=target_column, encoding=encoding, settings=settings, force=force)
        encoder = load_encoder(model_path, device=self.device, batch_size=batch_size, pooling=pooling,
                               allow_external=self.allow_external_models)
        return write_pseudo_labels(encoder, rows, output_file, settings)

    def evaluate_prediction(self, predictions_file: Path, ground_truth_file: Path, **options) -> dict[str, Any]:
        from mlops.deploy.prediction import evaluate_predictions

        return evaluate_predictions(predictions_file, ground_truth_file, **options)

    def list_models(self) -> list[dict[str, Any]]:
        """The configs of model_configs/, then each experiment's tuned configs (``experiment`` names it)."""
        rows = []
        places = [(None, self.catalog.config_dir)] + [(e, self.service.tuned_dir(e)) for e in self.service.experiment_ids()]
        for experiment_id, folder in places:
            for name in sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []:
                try:
                    entry = self.catalog.entry(str(folder / f"{name}.json"))
                except ConfigError as exc:
                    rows.append({"name": name, "class": None, "model_name": None, "description": f"INVALID: {exc}",
                                 "experiment": experiment_id})
                    continue
                rows.append({"name": name, "class": f"{entry.config.module_path}.{entry.config.class_name}",
                             "model_name": entry.config.model_name, "description": entry.config.description,
                             "experiment": experiment_id})
        return rows

    def resolve_config(self, experiment_id: str, model_config_name: str) -> NamedConfig:
        """A config by path, by name in model_configs/, or by name among the experiment's tuned configs."""
        return self.catalog.resolve(model_config_name, tuned_dir=self.service.tuned_dir(experiment_id))

    @_writes("tune")
    def tune(self, experiment_id: str, model_config_name: str, options) -> Any:
        """``cli tune``: an Optuna study over the config's search_space (see mlops.tuning.service)."""
        from mlops.tuning.service import TuningService

        self.service.load_experiment(experiment_id)
        named = self.resolve_config(experiment_id, model_config_name)
        tuner = TuningService(self.service, device=self.device, allow_external=self.allow_external_models)
        return tuner.tune(experiment_id, named, options)

    @_writes("audit")
    def _single_label_only(self, experiment_id: str, command: str) -> None:
        """Refuse ``command`` on a multi-label experiment (it assumes one class per row)."""
        if self.service.load_experiment(experiment_id).task.multi_label:
            raise ExperimentError(f"cli {command} assumes one label per row and does not support multi-label "
                                  f"experiments yet; {experiment_id!r} is multi-label (see docs/multi_label.md).")

    def audit(self, experiment_id: str, settings: AuditSettings) -> AuditResult:
        """``cli audit``: label issues, near-duplicates and odd rows from the experiment's out-of-sample runs."""
        from mlops.audit.service import AuditService

        self._single_label_only(experiment_id, "audit")
        configs = [self.resolve_config(experiment_id, name) for name in settings.model_config_names]
        return AuditService(self.service, device=self.device).run(experiment_id, configs, settings)

    def _labelling(self):
        from mlops.labelling.service import LabellingService

        return LabellingService(self.service, device=self.device)

    @_writes("learning-curve")
    def learning_curve(self, experiment_id: str, model_config_name: str, fractions: list[float] | None = None, *,
                       per_class: list[int] | None = None, force: bool = False, on_step=None) -> CurveResult:
        """``cli learning-curve``: each fold trained on nested stratified subsets of its training rows."""
        self._single_label_only(experiment_id, "learning-curve")
        named = self.resolve_config(experiment_id, model_config_name)
        return self._labelling().learning_curve(experiment_id, named, fractions, per_class=per_class, force=force,
                                                on_step=on_step)

    @_writes("active-learning-sim")
    def active_learning_sim(self, experiment_id: str, model_config_name: str, settings: SimulationSettings, *,
                            force: bool = False, on_step=None) -> CurveResult:
        """``cli active-learning-sim``: rounds of suggest, reveal and retrain inside each fold, per strategy."""
        from mlops.labelling.simulation import simulate

        self._single_label_only(experiment_id, "active-learning-sim")
        named = self.resolve_config(experiment_id, model_config_name)
        return simulate(self._labelling(), experiment_id, named, settings, force=force, on_step=on_step)

    def suggest_labels(self, model_path: Path, input_file: Path, output_file: Path, *, n: int, strategy: str,
                       text_column: str = "text", encoding: str = "utf-8", seed: int = 0, force: bool = False,
                       runtime: Runtime = "auto", on_progress=None) -> Suggestions:
        """``cli suggest-labels``: the pool's rows most worth labelling next, streamed."""
        from mlops.labelling.suggest import suggest_labels

        if not Path(input_file).is_file():
            raise DataError(f"input file {input_file} does not exist; check --input-file.")
        if Path(output_file).exists() and not force:
            raise ExperimentError(f"{output_file} already exists; pass --force to overwrite it or choose --output-file.")
        loaded = self.load_model(model_path, runtime)
        if loaded.task.multi_label:
            raise ExperimentError(f"{model_path} is a multi-label model; cli suggest-labels ranks rows by the "
                                  "uncertainty of one label per row and does not support it yet.")
        return suggest_labels(loaded, input_file, output_file, n=n, strategy=strategy, text_column=text_column,
                              encoding=encoding, seed=seed, force=force, on_progress=on_progress)

    def list_experiments(self) -> list[dict[str, Any]]:
        from mlops.evaluation.comparison import experiment_rows

        return experiment_rows(self.service)

    def compare_models(self, experiment_id: str, run_type: RunType, *, metric: str = "macro_f1",
                       baseline: str | None = None, rope: float = 0.01) -> list[dict[str, Any]]:
        from mlops.evaluation.comparison import compare_models

        return compare_models(self.service, experiment_id, run_type, metric=metric, baseline=baseline, rope=rope)

    @_writes("report")
    def report(self, experiment_id: str, *, output: Path | None = None, fmt: str = "html", force: bool = False):
        from mlops.evaluation.report.writer import write_report

        return write_report(self.service, experiment_id, output=output, fmt=fmt, force=force)

    def serving_app(self, model_path: Path, runtime: Runtime = "auto", settings=None):
        """The FastAPI app serving ``model_path`` (loaded here, so a bad folder fails before the server starts)."""
        from mlops.deploy.serving.server import ServeSettings, create_app

        return create_app(self.load_model(model_path, runtime), settings or ServeSettings())

    def generate_data(self, request, progress=None):
        from mlops.augment.synthetic import generate

        return generate(request, progress=progress)

    def _config_names(self, experiment_id: str, models: list[str]) -> dict[str, str]:
        """{run name: config as given} for configs given by name or path (an unknown one is a ConfigError here)."""
        tuned = self.service.tuned_dir(experiment_id)
        return {self.catalog.path_of(model, tuned).stem: model for model in models}

    def quickstart_plan(self, experiment_id: str, models: list[str], *, cv_folds: int = 3, export: bool = True,
                        measure: bool = True) -> QuickstartPlan:
        """The quickstart's stages and, with ``measure``, their expected time on this machine."""
        from mlops.experiments.quickstart import csv_rows, matmul_gflops, plan_quickstart

        models = list(self._config_names(experiment_id, models))

        rows = csv_rows(SAMPLE_DATA)
        holdout = math.ceil(rows * SplitParameters().test_size)
        gflops = matmul_gflops(None if self.device in (None, "auto") else self.device) if measure else None
        return plan_quickstart(models, cv_folds=cv_folds, rows=rows, holdout_rows=holdout,
                               new_rows=csv_rows(SAMPLE_NEW_DATA), export=export, gflops=gflops)

    @_writes("quickstart")
    def quickstart(self, experiment_id: str, models: list[str], *, cv_folds: int = 3, force: bool = False,
                   seed: int = 42, export: bool = True, stage=None) -> QuickstartResult:
        """The whole lifecycle on the shipped MR sample: splits, backtests, estimates, final model, predictions.
        ``stage(name)`` returns a context manager around each stage of ``quickstart_plan`` (progress lines)."""
        stage = stage or (lambda name: contextlib.nullcontext())
        labels = self._config_names(experiment_id, models)
        params = SplitParameters(cv_folds=cv_folds, seed=seed, backtesting_strategy=BacktestingStrategy.cv)
        columns = Columns(text="text", target="label")
        with stage("splits"):
            reused = self._reuse_or_create(experiment_id, params, columns, force)
        for label, model in labels.items():
            with stage(f"backtest {label}"):
                self.run_backtesting(experiment_id, [model], force=force)
            with stage(f"estimate {label}"):
                self.estimate_performance(experiment_id, [model], force=force)
        ranking = [row for row in self.compare_models(experiment_id, RunType.backtesting) if row["model"] in labels]
        best = ranking[0]["model"]
        holdout = self.compare_models(experiment_id, RunType.performance_estimation, baseline=best)
        holdout = [row for row in holdout if row["model"] in labels]
        estimates = {row["model"]: self.service.run_dir(experiment_id, row["model"], RunType.performance_estimation)
                     for row in ranking}
        estimates = {name: read_json(path / METRICS_FILE)["metrics"] for name, path in estimates.items()}
        notes = [f"final model: {best}, the best mean backtesting macro-F1"]
        with stage("final model"):
            final = self.train_final_model(experiment_id, labels[best], force=True, export=export)
        with stage("predict"):
            output = self.service.experiment_dir(experiment_id) / "new_reviews_predictions.csv"
            predictions = self.predict_new(final.model_dir, SAMPLE_NEW_DATA, output, force=True)
            new_metrics = None
            if SAMPLE_NEW_LABELS.is_file():
                new_metrics = self.evaluate_prediction(output, SAMPLE_NEW_LABELS, id_column="id")
        return QuickstartResult(experiment_id, ranking, estimates, final, predictions, new_metrics, reused, notes,
                                holdout)

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
