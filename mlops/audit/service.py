"""``cli audit``: likely label errors, near-duplicates across splits and odd rows, from the runs an experiment
already has; and, on request, whether training without the flagged rows changes the backtest.

Everything the label audit reads is out-of-sample: the train-val rows' probabilities come from the cv
backtest (each row scored once, by the fold model that did not train on it), the hold-out rows' from the
``estimate-performance`` model (trained on train-val only). Retraining without flagged rows removes them
from each fold's train and val rows only; the fold's test rows and the hold-out are never trained on.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.audit import odd_rows
from mlops.audit.label_issues import RankBy, find_label_issues
from mlops.audit.retrain import RetrainPlan, retrain_without_flagged
from mlops.audit.tables import issue_table, noise_rows, pair_table, sides
from mlops.core.choices import BacktestingStrategy, RunType
from mlops.core.config import config_fingerprint
from mlops.core.errors import ExperimentError
from mlops.core.io import read_json, staged_directory, write_json
from mlops.core.metrics import proba_column
from mlops.core.plugins import NamedConfig
from mlops.data import near_duplicates as duplicates
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, Experiment, ExperimentService,
                                       comparable_texts, embed_texts)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

AUDIT_FILE = "audit.json"
LABEL_ISSUES_FILE = "label_issues.csv"
HOLDOUT_LABEL_ISSUES_FILE = "holdout_label_issues.csv"
NEAR_DUPLICATES_FILE = "near_duplicates.csv"
ODD_ROWS_FILE = "odd_rows.csv"
RETRAIN_DIR = "retrain"
NEAR_DUPLICATE_METHODS = ("minhash", "embedding")


@dataclass
class AuditSettings:
    model_config_names: list[str]
    near_duplicates: tuple[str, ...] = ("minhash",)
    jaccard_threshold: float = duplicates.DEFAULT_JACCARD
    cosine_threshold: float = duplicates.DEFAULT_COSINE
    rank_by: RankBy = "self_confidence"
    outliers: bool = True
    retrain_without_flagged: bool = False
    top_k: int | None = None  # rows removed when retraining; None: every flagged row
    force: bool = False
    command: str = ""


@dataclass
class AuditResult:
    directory: Path
    summary: dict[str, Any]
    label_issues: pd.DataFrame
    holdout_label_issues: pd.DataFrame | None
    pairs: pd.DataFrame
    odd: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def audit_identity(experiment: Experiment) -> dict[str, Any]:
    return {"input_sha256": experiment.info["input_sha256"], "split_parameters": experiment.info["split_parameters"]}


def _fix(command: str, experiment_id: str, name: str) -> str:
    return f"`cli {command} --experiment-id {experiment_id} --model-config-name {name}`"


class AuditService:
    def __init__(self, service: ExperimentService, *, device: str | None = None, show_progress: bool = True) -> None:
        self.service = service
        self.device = device
        self.show_progress = show_progress

    # --- out-of-sample probabilities ------------------------------------------------------------------
    def _run_predictions(self, experiment: Experiment, named: NamedConfig, run_type: RunType,
                         required: bool) -> pd.DataFrame | None:
        """The predictions of every fold of a run (train-val rows once each for a cv backtest), with ``fold``."""
        import pandas as pd

        exp_id, name = experiment.experiment_id, named.name
        command = "run-backtesting" if run_type is RunType.backtesting else "estimate-performance"
        run_dir = self.service.run_dir(exp_id, name, run_type)
        n_folds = len(self.service.folds(experiment, run_type))
        fold_dirs = [run_dir / f"fold_{k}" for k in range(n_folds)] if run_type is RunType.backtesting else [run_dir]
        missing = [d for d in fold_dirs if not (d / METRICS_FILE).is_file() or not (d / PREDICTIONS_FILE).is_file()]

        def refuse(why: str) -> None:
            if required:
                raise ExperimentError(f"{why}; the audit needs its out-of-sample probabilities. Run "
                                      f"{_fix(command, exp_id, name)}{' --force' if 'stale' in why else ''} first.")

        if missing:
            refuse(f"{name} has no complete {run_type.value} run ({len(missing)} of {len(fold_dirs)} fold(s) missing)")
            return None
        records = [read_json(d / METRICS_FILE) for d in fold_dirs]
        if not all(experiment.made_on_current_splits(r) for r in records):
            refuse(f"{name}'s {run_type.value} run is stale: it was made on other data or split parameters")
            return None
        stored = {r["identity"].get("config_sha256") for r in records}
        if stored != {config_fingerprint(named.config, run_type)} and run_type is not RunType.backtesting:
            refuse(f"{name}'s {run_type.value} run is stale: its config has changed since")
            return None
        if (changed := self.service.changed_config(exp_id, name, run_type)) is not None:
            refuse(f"{name}'s {run_type.value} run is stale: {changed}")
            return None
        frames = []
        for k, directory in enumerate(fold_dirs):
            frame = pd.read_csv(directory / PREDICTIONS_FILE, dtype={"label": str, "text": str}, keep_default_na=False)
            frame["fold"] = f"fold {k + 1}" if run_type is RunType.backtesting else "hold-out"
            frames.append(frame)
        frame = pd.concat(frames, ignore_index=True)
        columns = [proba_column(label) for label in experiment.labels]
        if any(c not in frame for c in columns):
            refuse(f"{name}'s {run_type.value} predictions lack the probability columns {columns}")
            return None
        expected = np.sort(experiment.plan.train_val if run_type is RunType.backtesting
                           else experiment.plan.holdout_test)
        if not np.array_equal(np.sort(frame["row_id"].to_numpy()), expected):
            refuse(f"{name}'s {run_type.value} predictions do not cover the expected rows once each (stale)")
            return None
        return frame.sort_values("row_id", kind="stable").reset_index(drop=True)

    def _combined(self, experiment: Experiment, configs: list[NamedConfig], run_type: RunType,
                  required: bool) -> tuple[pd.DataFrame | None, np.ndarray | None, list[str]]:
        """Row frame and the mean of the configs' probabilities; the names that contributed."""
        frames = {named.name: self._run_predictions(experiment, named, run_type, required) for named in configs}
        used = [name for name, frame in frames.items() if frame is not None]
        if not used:
            return None, None, []
        columns = [proba_column(label) for label in experiment.labels]
        base = frames[used[0]]
        proba = np.mean([frames[name][columns].to_numpy(dtype=np.float64) for name in used], axis=0)
        return base[["row_id", "text", "label", "fold"]].copy(), proba, used

    # --- the audit ---------------------------------------------------------------------------------------
    def _check(self, experiment: Experiment, settings: AuditSettings) -> Path:
        if experiment.info["split_parameters"]["backtesting_strategy"] != BacktestingStrategy.cv.value:
            raise ExperimentError(
                f"experiment {experiment.experiment_id!r} backtests with train-val, which scores only part of the "
                "train-val rows out of fold; the audit needs every row scored once. Make a cv experiment: `cli "
                "generate-splits --backtesting-strategy cv ...` (a new --experiment-id, or --force), then "
                "run-backtesting.")
        for method in settings.near_duplicates:
            if method not in NEAR_DUPLICATE_METHODS:
                raise ExperimentError(f"--near-duplicates takes {', '.join(NEAR_DUPLICATE_METHODS)} or off, "
                                      f"found {method!r}.")
        directory = self.service.audit_dir(experiment.experiment_id)
        if directory.exists() and not settings.force:
            raise ExperimentError(f"{directory} already holds an audit; pass --force to replace it (copy out any "
                                  "rows you annotated first).")
        return directory

    def _label_audit(self, experiment: Experiment, configs: list[NamedConfig], run_type: RunType,
                     settings: AuditSettings) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
        """The flagged rows of a run type's out-of-sample probabilities, and their summary."""
        required = run_type is RunType.backtesting
        rows, proba, used = self._combined(experiment, configs, run_type, required=required)
        if rows is None:
            return None, None
        labels = experiment.labels
        y = rows["label"].map({label: j for j, label in enumerate(labels)}).to_numpy(dtype=np.int64)
        issues = find_label_issues(y, proba, rank_by=settings.rank_by)
        logger.info("label audit (%s): %d of %d rows flagged", run_type.value, int(issues.is_issue.sum()), len(y))
        summary = {"rows_audited": len(y), "flagged": int(issues.is_issue.sum()), "models": used,
                   "thresholds": dict(zip(labels, issues.thresholds.round(4).tolist(), strict=True)),
                   "by_class": noise_rows(issues, labels)}
        return issue_table(rows, y, proba, issues, labels), summary

    def run(self, experiment_id: str, configs: list[NamedConfig], settings: AuditSettings) -> AuditResult:
        experiment = self.service.load_experiment(experiment_id)
        directory = self._check(experiment, settings)
        started = time.perf_counter()
        flagged, label_summary = self._label_audit(experiment, configs, RunType.backtesting, settings)
        holdout, holdout_summary = self._label_audit(experiment, configs, RunType.performance_estimation, settings)
        notes = []
        if holdout is None:
            notes.append("hold-out not audited: no current estimate-performance run of "
                         f"{', '.join(c.name for c in configs)} (run `cli estimate-performance` to audit it too)")
        else:
            holdout_summary["fix"] = ("a corrected label changes the input file, so its sha256 no longer matches the "
                                      "experiment's: after fixing, re-split with `cli generate-splits --experiment-id "
                                      "... --force` (or a new id) and rerun the backtests")
        data = self.service.load_data(experiment)
        frame = data.frame
        texts = comparable_texts(frame)
        embeddings = embed_texts(texts, device=self.device) if "embedding" in settings.near_duplicates else None
        pairs = pair_table(experiment, frame, self._pairs(texts, embeddings, settings))
        odd = self._odd_rows(experiment, configs, frame, texts, embeddings, settings)
        index = {label: j for j, label in enumerate(experiment.labels)}
        fold_test_labels = [frame.loc[f.test, "label"].map(index).to_numpy() for f in experiment.plan.backtesting]
        used = label_summary["models"]
        summary: dict[str, Any] = {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": settings.command, "experiment_id": experiment_id, "identity": audit_identity(experiment),
            "models": {c.name: self._model_record(experiment, c, RunType.backtesting) for c in configs if c.name in used},
            "probabilities": "mean of " + ", ".join(used) if len(used) > 1 else used[0],
            "rank_by": settings.rank_by, "label_issues": label_summary, "holdout_label_issues": holdout_summary,
            "near_duplicates": {
                "methods": list(settings.near_duplicates), "jaccard_threshold": settings.jaccard_threshold,
                "cosine_threshold": settings.cosine_threshold, "pairs": len(pairs),
                "straddling_holdout": int((pairs["straddles"] == "hold-out/train-val").sum()),
                "straddling_folds": int((pairs["straddles"] == "folds").sum()),
                "labels_disagree": int(pairs["labels_disagree"].sum()),
                "grouped_by_splits": experiment.info["split_parameters"].get("near_duplicates", "off")},
            "odd_rows": {"rows": len(odd), "by_reason": odd["reason"].value_counts().to_dict() if len(odd) else {},
                         "small_classes": odd_rows.small_classes(fold_test_labels, experiment.labels),
                         "min_class_test_rows": odd_rows.MIN_CLASS_TEST_ROWS},
            "notes": notes,
        }
        with staged_directory(directory, replace=settings.force) as scratch:
            flagged.to_csv(scratch / LABEL_ISSUES_FILE, index=False)
            if holdout is not None:
                holdout.to_csv(scratch / HOLDOUT_LABEL_ISSUES_FILE, index=False)
            pairs.to_csv(scratch / NEAR_DUPLICATES_FILE, index=False)
            odd.to_csv(scratch / ODD_ROWS_FILE, index=False)
            if settings.retrain_without_flagged:
                plan = RetrainPlan(settings.rank_by, settings.top_k, self.device, self.show_progress)
                summary["retrain"] = retrain_without_flagged(self.service, experiment, configs, data, plan,
                                                             scratch / RETRAIN_DIR, flagged["row_id"].to_numpy())
            summary["elapsed_s"] = round(time.perf_counter() - started, 2)
            write_json(scratch / AUDIT_FILE, summary)
        return AuditResult(directory, summary, flagged, holdout, pairs, odd, notes)

    def _model_record(self, experiment: Experiment, named: NamedConfig, run_type: RunType) -> dict[str, Any]:
        return {"config_source": named.source, "config_sha256": config_fingerprint(named.config, run_type),
                "run_dir": str(self.service.run_dir(experiment.experiment_id, named.name, run_type))}

    def _pairs(self, texts: list[str], embeddings: np.ndarray | None, settings: AuditSettings):
        found = []
        if "minhash" in settings.near_duplicates:
            found.append(duplicates.minhash_pairs(texts, threshold=settings.jaccard_threshold))
        if embeddings is not None:
            found.append(duplicates.embedding_pairs(embeddings, threshold=settings.cosine_threshold))
        return found

    def _odd_rows(self, experiment: Experiment, configs: list[NamedConfig], frame, texts: list[str],
                  embeddings: np.ndarray | None, settings: AuditSettings) -> pd.DataFrame:
        import pandas as pd

        row_ids = frame.index.to_numpy()
        side = sides(experiment, row_ids)
        found = [(row_ids[i], reason, value) for i, reason, value in odd_rows.text_flags(texts)]
        for named in configs:
            max_length = named.config.training_arguments.get("max_length")
            if named.config.model_name and max_length:
                lengths = odd_rows.token_lengths(named.config.model_name, texts)
                found += [(row_ids[i], f"longer_than_max_length ({named.name}: {max_length} tokens)", float(lengths[i]))
                          for i in np.flatnonzero(lengths > max_length)]
        if settings.outliers and len(texts) > 10:
            vectors = embeddings if embeddings is not None else odd_rows.tfidf_vectors(texts)
            reference = np.flatnonzero(np.isin(row_ids, experiment.plan.train_val))
            distances, cut = odd_rows.distant_rows(vectors, reference, seed=experiment.seed)
            kind = "embedding" if embeddings is not None else "tf-idf"
            found += [(row_ids[i], f"far_from_training_neighbours ({kind}, cut {cut:.3f})", float(distances[i]))
                      for i in np.flatnonzero(distances > cut)]
        table = pd.DataFrame(found, columns=["row_id", "reason", "value"])
        table["split"] = table["row_id"].map(side)
        table["label"] = frame.loc[table["row_id"], "label"].to_numpy() if len(table) else []
        table["text"] = frame.loc[table["row_id"], "text"].to_numpy() if len(table) else []
        return table.sort_values(["reason", "row_id"], kind="stable").reset_index(drop=True)


def command_line(argv: list[str]) -> str:
    return "cli " + " ".join(shlex.quote(a) for a in argv)
