"""``cli learning-curve`` and ``cli active-learning-sim`` on an experiment's backtesting folds.

Both train only on rows of a fold's training part (a nested subset of it, or the rows a simulated annotator
has revealed so far), keep the fold's val rows for early stopping, and score on the fold's test rows. No val or
test row is ever trained on or ranked for labelling; the hold-out is never read.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core import plots
from mlops.core.config import config_fingerprint
from mlops.core.errors import ExperimentError
from mlops.core.io import read_json, write_json
from mlops.core.metrics import compute_metrics
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.experiments.fold import fit_and_predict
from mlops.experiments.service import Experiment, ExperimentService, RunType, dataset_at
from mlops.labelling.curve import (DEFAULT_FRACTIONS, doubling_gain, extrapolation_check, nested_per_class,
                                   nested_subsets, power_law)

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass
class CurveResult:
    directory: Path
    summary: dict[str, Any]
    resumed: int


class LabellingService:
    def __init__(self, service: ExperimentService, *, device: str | None = None, show_progress: bool = True) -> None:
        self.service = service
        self.device = device
        self.show_progress = show_progress

    def _context(self, experiment: Experiment, work_dir: str) -> FitContext:
        return FitContext(seed=experiment.seed, work_dir=Path(work_dir), device=self.device,
                          show_progress=self.show_progress)

    def _identity(self, experiment: Experiment, named: NamedConfig, **extra) -> dict[str, Any]:
        return {"input_sha256": experiment.info["input_sha256"], "split_parameters": experiment.info["split_parameters"],
                "config_sha256": config_fingerprint(named.config, RunType.backtesting), "seed": experiment.seed, **extra}

    # --- learning curve --------------------------------------------------------------------------------
    def learning_curve(self, experiment_id: str, named: NamedConfig, fractions: list[float] | None = None, *,
                       per_class: list[int] | None = None, force: bool = False, on_step=None) -> CurveResult:
        """Each fold trained on nested subsets of its training rows: shares of them (``fractions``) or ``per_class``
        rows of each class (few-shot sizes); not both."""
        if per_class:
            if fractions:
                raise ExperimentError("Give --fractions or --per-class, not both.")
            sizes = sorted(set(int(n) for n in per_class))
            if sizes[0] < 1:
                raise ExperimentError(f"--per-class must be whole numbers of at least 1, found {sizes}.")
            kind = "per_class"
        else:
            sizes = sorted(set(float(f) for f in (fractions or DEFAULT_FRACTIONS)))
            if sizes[0] <= 0 or sizes[-1] > 1:
                raise ExperimentError(f"--fractions must be in (0, 1], found {sizes}.")
            kind = "fraction"
        experiment = self.service.load_experiment(experiment_id)
        data = self.service.load_data(experiment)
        directory = self.service.experiment_dir(experiment_id) / "learning_curve" / named.name
        points, resumed = [], 0
        for k, fold in enumerate(experiment.plan.backtesting):
            y = data.frame.loc[fold.train, "label"].to_numpy()
            subsets = (nested_per_class(y, sizes, seed=experiment.seed + k) if kind == "per_class"
                       else nested_subsets(y, sizes, seed=experiment.seed + k))
            for size in sizes:
                path = directory / f"fold_{k}" / f"{kind}_{size:g}.json"
                identity = self._identity(experiment, named, fold=k, **{kind: size})
                record = read_json(path) if path.is_file() and not force else None
                if record is not None and record.get("identity") == identity:
                    resumed += 1
                else:
                    train_rows = fold.train[subsets[size]]
                    record = self._train_and_score(experiment, named, k, data, train_rows, fold.val, fold.test)
                    record["identity"] = identity
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_json(path, record)
                points.append({"fold": k + 1, kind: size, "rows": record["rows"]["train"],
                               "macro_f1": record["metrics"]["macro_f1"], "accuracy": record["metrics"]["accuracy"],
                               "train_s": record["timings"].get("train_s")})
                if on_step:
                    on_step()
        summary = _curve_summary(experiment, named, points, kind, sizes)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / SUMMARY_FILE, summary)
        (directory / "curve.png").write_bytes(_curve_plot(named.name, summary))
        return CurveResult(directory, summary, resumed)

    def _train_and_score(self, experiment: Experiment, named: NamedConfig, k: int, data, train_rows: np.ndarray,
                         val_rows: np.ndarray, test_rows: np.ndarray) -> dict[str, Any]:
        test = dataset_at(data, test_rows)
        with tempfile.TemporaryDirectory(prefix="labelling-") as work_dir:
            outcome = fit_and_predict(named.for_backtesting_fold(k), dataset_at(data, train_rows),
                                      dataset_at(data, val_rows), test, experiment.labels,
                                      self._context(experiment, work_dir))
        return {"metrics": compute_metrics(test.labels, outcome.proba, experiment.labels),
                "rows": {"train": len(train_rows), "val": len(val_rows), "test": len(test_rows)},
                "timings": outcome.timings}


def _curve_summary(experiment: Experiment, named: NamedConfig, points: list[dict[str, Any]], kind: str,
                   sizes: list) -> dict[str, Any]:
    """Per size (a fraction or a per-class count): the fold mean, spread and training time; the fitted doubling
    gain; and the extrapolation check (per-class sizes count as their share of the largest size)."""
    rows = np.array([p["rows"] for p in points], dtype=np.float64)
    scores = np.array([p["macro_f1"] for p in points])
    folds = np.array([p["fold"] for p in points])
    size_of = np.array([p[kind] for p in points], dtype=np.float64)
    per_size = []
    for size in sizes:
        at = size_of == size
        per_size.append({kind: size, "rows_mean": float(rows[at].mean()),
                         "macro_f1_mean": float(scores[at].mean()),
                         "macro_f1_std": float(scores[at].std(ddof=1)) if at.sum() > 1 else 0.0,
                         "macro_f1_min": float(scores[at].min()), "macro_f1_max": float(scores[at].max()),
                         "train_s_mean": float(np.mean([p["train_s"] or 0.0 for p, a in zip(points, at) if a]))})
    full_rows = float(rows[size_of == max(sizes)].mean())
    return {"experiment_id": experiment.experiment_id, "model": named.name, "config_source": named.source,
            "config_sha256": config_fingerprint(named.config, RunType.backtesting), "labels": experiment.labels,
            "metric": "macro_f1", "sizes": kind, "points": points, "per_fraction": per_size,
            "doubling": {"from_rows": full_rows, "to_rows": 2 * full_rows,
                         **doubling_gain(rows, scores, folds, full_rows, experiment.seed)},
            "extrapolation_check": extrapolation_check(rows, scores, size_of / max(sizes))}


def _curve_plot(name: str, summary: dict[str, Any]) -> bytes:
    points = [(p["rows_mean"], p["macro_f1_mean"], p["macro_f1_min"], p["macro_f1_max"]) for p in summary["per_fraction"]]
    fitted = None
    fit = summary["doubling"].get("fit")
    if fit:
        x = np.linspace(points[0][0], summary["doubling"]["to_rows"], 60)
        fitted = {name: (x, power_law(x, fit["a"], fit["b"], fit["c"]))}
    return plots.labelled_rows_curves({name: points}, f"learning curve of {name} (folds: min-max; dashed: fitted, "
                                      "to 2x the rows)", fitted=fitted)

