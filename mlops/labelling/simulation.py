"""``cli active-learning-sim``: replay labelling on the user's own labelled data.

Inside each backtesting fold the fold's training rows are the pool: a small stratified seeded set starts
labelled, the other labels are hidden, and each round trains the model on the labelled rows (the fold's val
rows for early stopping), scores it on the fold's test rows, ranks the hidden pool rows by the strategy and
reveals the labels of the top batch. Every strategy starts from the same rows. The stopping hint follows
Bloodgood and Vijay-Shanker (2009, "A method for stopping active learning based on stabilizing predictions"):
stop once the predictions on a fixed sample of the pool agree between consecutive rounds (Cohen's kappa at
least 0.99 over three rounds).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.core import plots
from mlops.core.errors import ExperimentError
from mlops.core.io import read_json, write_json
from mlops.core.metrics import compute_metrics
from mlops.core.plugins import NamedConfig
from mlops.experiments.fold import fit_and_predict
from mlops.experiments.service import Experiment, dataset_at
from mlops.labelling.curve import nested_subsets
from mlops.labelling.service import SUMMARY_FILE, CurveResult, LabellingService
from mlops.labelling.strategies import check_strategy, select

logger = logging.getLogger(__name__)

STOP_KAPPA = 0.99
STOP_WINDOW = 3


@dataclass
class SimulationSettings:
    strategies: list[str] = field(default_factory=lambda: ["entropy", "margin", "diverse", "random"])
    initial: int = 50
    batch: int = 50
    rounds: int = 10
    stop_set: int = 1000


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def _one_run(labelling: LabellingService, experiment: Experiment, named: NamedConfig, k: int, data, strategy: str,
             settings: SimulationSettings) -> list[dict[str, Any]]:
    """The rounds of one strategy in fold k: labelled rows, test scores, agreement on the stop set."""
    fold = experiment.plan.backtesting[k]
    pool = fold.train
    frame = data.frame.loc[pool]
    texts, y = frame["text"].tolist(), frame["label"].to_numpy()
    share = min(1.0, settings.initial / len(pool))
    labelled = nested_subsets(y, [share], seed=experiment.seed + k)[share]
    rng = np.random.default_rng(experiment.seed + k)
    stop_set = np.sort(rng.choice(len(pool), min(settings.stop_set, len(pool)), replace=False))
    test = dataset_at(data, fold.test)
    val = dataset_at(data, fold.val)
    rounds, previous = [], None
    for r in range(settings.rounds + 1):
        hidden = np.setdiff1d(np.arange(len(pool)), labelled)
        with tempfile.TemporaryDirectory(prefix="al-sim-") as work_dir:
            outcome = fit_and_predict(named.for_backtesting_fold(k), dataset_at(data, pool[labelled]), val, test,
                                      experiment.labels, labelling._context(experiment, work_dir))
            unlabelled = dataset_at(data, pool[hidden], with_labels=False)
            proba = outcome.model.predict_proba(unlabelled) if len(hidden) else np.zeros((0, len(experiment.labels)))
            stop_predictions = outcome.model.predict_proba(dataset_at(data, pool[stop_set], with_labels=False)).argmax(1)
        metrics = compute_metrics(test.labels, outcome.proba, experiment.labels)
        rounds.append({"strategy": strategy, "fold": k + 1, "round": r, "labelled": int(len(labelled)),
                       "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
                       "train_s": outcome.timings.get("train_s"),
                       "kappa_vs_previous": None if previous is None else _kappa(previous, stop_predictions)})
        previous = stop_predictions
        if r == settings.rounds or not len(hidden):
            break
        picked = select(proba, settings.batch, strategy, texts=[texts[i] for i in hidden], seed=experiment.seed + r)
        labelled = np.sort(np.concatenate([labelled, hidden[picked]]))
    return rounds


def simulate(labelling: LabellingService, experiment_id: str, named: NamedConfig, settings: SimulationSettings, *,
             force: bool = False, on_step=None) -> CurveResult:
    for strategy in settings.strategies:
        check_strategy(strategy)
    if "random" not in settings.strategies:
        settings.strategies = [*settings.strategies, "random"]  # the control the others are measured against
    if min(settings.initial, settings.batch, settings.rounds) < 1:
        raise ExperimentError("--initial, --batch and --rounds must each be at least 1.")
    service = labelling.service
    experiment = service.load_experiment(experiment_id)
    data = service.load_data(experiment)
    directory = service.experiment_dir(experiment_id) / "active_learning" / named.name
    rows, resumed = [], 0
    for strategy in settings.strategies:
        for k in range(len(experiment.plan.backtesting)):
            path = directory / f"fold_{k}" / f"{strategy}.json"
            identity = labelling._identity(experiment, named, fold=k, strategy=strategy, initial=settings.initial,
                                           batch=settings.batch, rounds=settings.rounds, stop_set=settings.stop_set)
            record = read_json(path) if path.is_file() and not force else None
            if record is not None and record.get("identity") == identity:
                resumed += 1
            else:
                record = {"identity": identity,
                          "rounds": _one_run(labelling, experiment, named, k, data, strategy, settings)}
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, record)
            rows += record["rounds"]
            if on_step:
                on_step()
    summary = _summary(experiment, named, rows, settings)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / SUMMARY_FILE, summary)
    curves = {s: [(c["labelled_mean"], c["macro_f1_mean"], c["macro_f1_min"], c["macro_f1_max"])
                  for c in summary["curves"][s]] for s in settings.strategies}
    (directory / "curves.png").write_bytes(plots.labelled_rows_curves(
        curves, f"active learning with {named.name}: macro-F1 per round (folds: min-max)"))
    return CurveResult(directory, summary, resumed)


def _summary(experiment: Experiment, named: NamedConfig, rows: list[dict[str, Any]],
             settings: SimulationSettings) -> dict[str, Any]:
    curves: dict[str, list[dict[str, Any]]] = {}
    for strategy in settings.strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        for r in sorted({r["round"] for r in mine}):
            at = [x for x in mine if x["round"] == r]
            scores = [x["macro_f1"] for x in at]
            kappas = [x["kappa_vs_previous"] for x in at if x["kappa_vs_previous"] is not None]
            curves.setdefault(strategy, []).append({
                "round": r, "labelled_mean": float(np.mean([x["labelled"] for x in at])),
                "macro_f1_mean": float(np.mean(scores)), "macro_f1_min": float(min(scores)),
                "macro_f1_max": float(max(scores)), "kappa_mean": float(np.mean(kappas)) if kappas else None})
    target = curves["random"][-1]["macro_f1_mean"]
    random_labels = curves["random"][-1]["labelled_mean"]
    outcome = {}
    for strategy, curve in curves.items():
        reached = next((c for c in curve if c["macro_f1_mean"] >= target), None)
        stable = [i for i in range(STOP_WINDOW, len(curve))
                  if all((curve[j]["kappa_mean"] or 0.0) >= STOP_KAPPA for j in range(i - STOP_WINDOW + 1, i + 1))]
        stop = curve[stable[0]] if stable else None
        outcome[strategy] = {
            "final_macro_f1": curve[-1]["macro_f1_mean"], "final_labelled": curve[-1]["labelled_mean"],
            "labels_to_reach_random_final": None if reached is None else reached["labelled_mean"],
            "share_of_random_labels": None if reached is None else reached["labelled_mean"] / random_labels,
            "stop_hint": None if stop is None else {"round": stop["round"], "labelled": stop["labelled_mean"],
                                                     "macro_f1": stop["macro_f1_mean"]}}
    return {"experiment_id": experiment.experiment_id, "model": named.name, "config_source": named.source,
            "settings": settings.__dict__, "random_final_macro_f1": target, "curves": curves, "outcome": outcome,
            "rounds": rows}
