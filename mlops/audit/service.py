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
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.audit.label_issues import LabelIssues, RankBy, find_label_issues
from mlops.audit import odd_rows
from mlops.core.choices import BacktestingStrategy, RunType
from mlops.core.config import config_fingerprint
from mlops.core.errors import ExperimentError
from mlops.core.io import read_json, staged_directory, write_json
from mlops.core.metrics import compute_metrics, proba_column
from mlops.core.model_interface import FitContext
from mlops.core.plugins import NamedConfig
from mlops.core.statistics import corrected_resampled_ttest
from mlops.data import near_duplicates as duplicates
from mlops.experiments.fold import fit_and_predict, predictions_frame
from mlops.experiments.service import (METRICS_FILE, PREDICTIONS_FILE, Experiment, ExperimentService,
                                       comparable_texts, dataset_at, embed_texts)

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
    def run(self, experiment_id: str, configs: list[NamedConfig], settings: AuditSettings) -> AuditResult:
        import pandas as pd

        experiment = self.service.load_experiment(experiment_id)
        if experiment.info["split_parameters"]["backtesting_strategy"] != BacktestingStrategy.cv.value:
            raise ExperimentError(
                f"experiment {experiment_id!r} backtests with train-val, which scores only part of the train-val rows "
                "out of fold; the audit needs every row scored once. Make a cv experiment: `cli generate-splits "
                "--backtesting-strategy cv ...` (a new --experiment-id, or --force), then run-backtesting.")
        for method in settings.near_duplicates:
            if method not in NEAR_DUPLICATE_METHODS:
                raise ExperimentError(f"--near-duplicates takes {', '.join(NEAR_DUPLICATE_METHODS)} or off, "
                                      f"found {method!r}.")
        directory = self.service.audit_dir(experiment_id)
        if directory.exists() and not settings.force:
            raise ExperimentError(f"{directory} already holds an audit; pass --force to replace it (copy out any "
                                  "rows you annotated first).")
        started = time.perf_counter()
        labels = experiment.labels
        index = {label: j for j, label in enumerate(labels)}
        rows, proba, used = self._combined(experiment, configs, RunType.backtesting, required=True)
        y = rows["label"].map(index).to_numpy(dtype=np.int64)
        issues = find_label_issues(y, proba, rank_by=settings.rank_by)
        issue_table = _issue_table(rows, y, proba, issues, labels)
        holdout_rows, holdout_proba, holdout_used = self._combined(experiment, configs,
                                                                   RunType.performance_estimation, required=False)
        holdout_table, holdout_issues, notes = None, None, []
        if holdout_rows is not None:
            hy = holdout_rows["label"].map(index).to_numpy(dtype=np.int64)
            holdout_issues = find_label_issues(hy, holdout_proba, rank_by=settings.rank_by)
            holdout_table = _issue_table(holdout_rows, hy, holdout_proba, holdout_issues, labels)
        else:
            notes.append("hold-out not audited: no current estimate-performance run of "
                         f"{', '.join(c.name for c in configs)} (run `cli estimate-performance` to audit it too)")
        logger.info("label audit: %d of %d train-val rows flagged", int(issues.is_issue.sum()), len(y))

        data = self.service.load_data(experiment)
        frame = data.frame
        texts = comparable_texts(frame)
        embeddings = None
        if "embedding" in settings.near_duplicates:
            embeddings = embed_texts(texts, device=self.device)
        pairs = self._pairs(texts, embeddings, settings)
        pair_table = _pair_table(experiment, frame, pairs)
        odd = self._odd_rows(experiment, configs, frame, texts, embeddings, settings)
        fold_test_labels = [frame.loc[f.test, "label"].map(index).to_numpy() for f in experiment.plan.backtesting]
        small = odd_rows.small_classes(fold_test_labels, labels)

        summary: dict[str, Any] = {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": settings.command,
            "experiment_id": experiment_id,
            "identity": audit_identity(experiment),
            "models": {name: self._model_record(experiment, named, RunType.backtesting)
                       for name, named in ((c.name, c) for c in configs) if name in used},
            "probabilities": "mean of " + ", ".join(used) if len(used) > 1 else used[0],
            "rank_by": settings.rank_by,
            "label_issues": {
                "rows_audited": len(y), "flagged": int(issues.is_issue.sum()),
                "thresholds": dict(zip(labels, issues.thresholds.round(4).tolist(), strict=True)),
                "by_class": _noise_rows(issues, labels),
            },
            "holdout_label_issues": None if holdout_issues is None else {
                "rows_audited": int(len(holdout_rows)),
                "flagged": int(holdout_issues.is_issue.sum()), "models": holdout_used,
                "by_class": _noise_rows(holdout_issues, labels),
                "fix": "a corrected label changes the input file, so its sha256 no longer matches the experiment's: "
                       "after fixing, re-split with `cli generate-splits --experiment-id ... --force` (or a new id) "
                       "and rerun the backtests",
            },
            "near_duplicates": {
                "methods": list(settings.near_duplicates), "jaccard_threshold": settings.jaccard_threshold,
                "cosine_threshold": settings.cosine_threshold, "pairs": len(pair_table),
                "straddling_holdout": int((pair_table["straddles"] == "hold-out/train-val").sum()),
                "straddling_folds": int((pair_table["straddles"] == "folds").sum()),
                "labels_disagree": int(pair_table["labels_disagree"].sum()),
                "grouped_by_splits": experiment.info["split_parameters"].get("near_duplicates", "off"),
            },
            "odd_rows": {"rows": len(odd), "by_reason": odd["reason"].value_counts().to_dict() if len(odd) else {},
                         "small_classes": small, "min_class_test_rows": odd_rows.MIN_CLASS_TEST_ROWS},
            "notes": notes,
        }
        with staged_directory(directory, replace=settings.force) as scratch:
            issue_table.to_csv(scratch / LABEL_ISSUES_FILE, index=False)
            if holdout_table is not None:
                holdout_table.to_csv(scratch / HOLDOUT_LABEL_ISSUES_FILE, index=False)
            pair_table.to_csv(scratch / NEAR_DUPLICATES_FILE, index=False)
            odd.to_csv(scratch / ODD_ROWS_FILE, index=False)
            if settings.retrain_without_flagged:
                summary["retrain"] = self._retrain(experiment, configs, data, settings, scratch / RETRAIN_DIR,
                                                   issue_table["row_id"].to_numpy())
            summary["elapsed_s"] = round(time.perf_counter() - started, 2)
            write_json(scratch / AUDIT_FILE, summary)
        return AuditResult(directory, summary, issue_table, holdout_table, pair_table, odd, notes)

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
        side = _sides(experiment, row_ids)
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

    # --- does fixing it matter? --------------------------------------------------------------------------
    def _inner_flags(self, experiment: Experiment, configs: list[NamedConfig], data, k: int, rows: np.ndarray,
                     settings: AuditSettings, work_dir: Path) -> np.ndarray:
        """Row ids flagged among ``rows`` (fold k's train and val rows) by an inner cross-validation over those
        rows only, so that fold k's test rows decide nothing about what is removed before scoring on them."""
        from mlops.data.splitting import grouped_fold_ids, leakage_groups

        labels = experiment.labels
        frame = data.frame.loc[rows]
        y = frame["label"].map({label: j for j, label in enumerate(labels)}).to_numpy(dtype=np.int64)
        groups = leakage_groups(frame["text"].tolist(), frame["text_pair"].tolist() if "text_pair" in frame else None)
        n_inner = max(2, len(experiment.plan.backtesting) - 1)
        inner = grouped_fold_ids(y, groups, n_inner, experiment.seed + k)
        probas = []
        for named in configs:
            proba = np.zeros((len(rows), len(labels)))
            for j in range(n_inner):
                test_pos, rest = np.flatnonzero(inner == j), np.flatnonzero(inner != j)
                val_pick = grouped_fold_ids(y[rest], groups[rest], 10, experiment.seed + k) == 0
                outcome = fit_and_predict(
                    named.for_backtesting_fold(k), dataset_at(data, rows[rest[~val_pick]]),
                    dataset_at(data, rows[rest[val_pick]]), dataset_at(data, rows[test_pos]), labels,
                    FitContext(seed=experiment.seed, work_dir=work_dir, device=self.device,
                               show_progress=self.show_progress))
                proba[test_pos] = outcome.proba
            probas.append(proba)
        issues = find_label_issues(y, np.mean(probas, axis=0), rank_by=settings.rank_by)
        ranked = issues.ranked
        if settings.top_k is not None:  # the same share of rows as --top-k is of the train-val rows
            share = settings.top_k / len(experiment.plan.train_val)
            ranked = ranked[: int(round(share * len(rows)))]
        return rows[ranked]

    def _retrain(self, experiment: Experiment, configs: list[NamedConfig], data, settings: AuditSettings,
                 directory: Path, audit_flags: np.ndarray) -> dict[str, Any]:
        """Backtest each config again, each fold without the rows an inner audit of its own train and val rows
        flags; fold-paired against the original backtest on the same (all) test rows."""
        labels = experiment.labels
        folds = experiment.plan.backtesting
        per_config: dict[str, dict[str, list]] = {named.name: {"folds": [], "diffs": [], "n_train": [], "n_test": []}
                                                  for named in configs}
        for k, fold in enumerate(folds):
            with tempfile.TemporaryDirectory(prefix="audit-retrain-") as work_dir:
                logger.info("retrain fold %d/%d: inner audit of its %d train and val rows", k + 1, len(folds),
                            len(fold.train) + len(fold.val))
                flagged = self._inner_flags(experiment, configs, data, k, np.concatenate([fold.train, fold.val]),
                                            settings, Path(work_dir))
                train = fold.train[~np.isin(fold.train, flagged)]
                val = fold.val[~np.isin(fold.val, flagged)]
                test = dataset_at(data, fold.test)
                for named in configs:
                    logger.info("retraining %s fold %d/%d without %d flagged rows (train %d -> %d, val %d -> %d)",
                                named.name, k + 1, len(folds), len(flagged), len(fold.train), len(train),
                                len(fold.val), len(val))
                    outcome = fit_and_predict(
                        named.for_backtesting_fold(k), dataset_at(data, train), dataset_at(data, val), test, labels,
                        FitContext(seed=experiment.seed, work_dir=Path(work_dir), device=self.device,
                                   show_progress=self.show_progress))
                    metrics = compute_metrics(test.labels, outcome.proba, labels)
                    original_dir = self.service.run_dir(experiment.experiment_id, named.name, RunType.backtesting)
                    original = read_json(original_dir / f"fold_{k}" / METRICS_FILE)["metrics"]
                    fold_dir = directory / named.name / f"fold_{k}"
                    fold_dir.mkdir(parents=True, exist_ok=True)
                    predictions_frame(fold.test, test, outcome.proba, labels).to_csv(fold_dir / PREDICTIONS_FILE,
                                                                                     index=False)
                    removed = {"train": len(fold.train) - len(train), "val": len(fold.val) - len(val)}
                    write_json(fold_dir / METRICS_FILE, {
                        "metrics": metrics, "timings": outcome.timings, "removed_row_ids": flagged.tolist(),
                        "rows": {"train": len(train), "val": len(val), "test": len(fold.test), "removed": removed}})
                    entry = per_config[named.name]
                    entry["diffs"].append(metrics["macro_f1"] - original["macro_f1"])
                    entry["n_train"].append(len(train))
                    entry["n_test"].append(len(fold.test))
                    entry["folds"].append({
                        "fold": k + 1, "macro_f1": metrics["macro_f1"], "original_macro_f1": original["macro_f1"],
                        "removed_train": removed["train"], "removed_val": removed["val"],
                        "removed_also_flagged_by_audit": int(np.isin(flagged, audit_flags).sum())})
        result = {}
        for name, entry in per_config.items():
            test = corrected_resampled_ttest(entry["diffs"], float(np.mean(entry["n_train"])),
                                             float(np.mean(entry["n_test"])))
            result[name] = {"folds": entry["folds"], "diff_mean": test.mean, "ci_low": test.ci_low,
                            "ci_high": test.ci_high, "p_value": test.p_value,
                            "rows_removed_mean": float(np.mean([f["removed_train"] + f["removed_val"]
                                                                for f in entry["folds"]]))}
        return result


def _issue_table(rows: pd.DataFrame, y: np.ndarray, proba: np.ndarray, issues: LabelIssues,
                 labels: list[str]) -> pd.DataFrame:
    import pandas as pd

    ranked = issues.ranked
    names = np.asarray(labels, dtype=object)
    return pd.DataFrame({
        "rank": np.arange(1, len(ranked) + 1),
        "row_id": rows["row_id"].to_numpy()[ranked],
        "text": rows["text"].to_numpy()[ranked],
        "given_label": names[y[ranked]],
        "suggested_label": names[issues.suggested[ranked]],
        "score": issues.score[ranked].round(6),
        "p_given": proba[ranked, y[ranked]].round(6),
        "p_suggested": proba[ranked, issues.suggested[ranked]].round(6),
        "fold": rows["fold"].to_numpy()[ranked],
    })


def _noise_rows(issues: LabelIssues, labels: list[str]) -> list[dict[str, Any]]:
    """Per given label: rows, the confident joint's estimate of rows truly of another class, and rows flagged."""
    given = np.asarray(issues.given)
    flagged = np.bincount(given[issues.is_issue], minlength=len(labels))
    return [{"label": label, **entry, "flagged": int(flagged[j])}
            for j, (label, entry) in enumerate(zip(labels, issues.noise_by_class(), strict=True))]


def _sides(experiment: Experiment, row_ids: np.ndarray) -> dict[int, str]:
    """Where each row sits: the hold-out, or the backtesting fold whose test set holds it."""
    side = {int(r): "hold-out" for r in experiment.plan.holdout_test}
    for k, fold in enumerate(experiment.plan.backtesting):
        side.update({int(r): f"fold {k + 1}" for r in fold.test})
    return {int(r): side.get(int(r), "train-val") for r in row_ids}


def _pair_table(experiment: Experiment, frame, found: list) -> pd.DataFrame:
    """One row per near-duplicate pair (the first method that found it names it), across-split pairs first."""
    import pandas as pd

    row_ids = frame.index.to_numpy()
    side = _sides(experiment, row_ids)
    first = np.concatenate([p.first for p in found]) if found else np.empty(0, np.int64)
    second = np.concatenate([p.second for p in found]) if found else np.empty(0, np.int64)
    similarity = np.concatenate([p.similarity for p in found]) if found else np.empty(0)
    method = np.concatenate([np.full(len(p), p.method, dtype=object) for p in found]) if found else np.empty(0, object)
    _, unique = np.unique(np.stack([first, second], axis=1), axis=0, return_index=True) if len(first) else (None, [])
    unique = np.sort(np.asarray(unique, dtype=np.int64))
    first, second, similarity, method = first[unique], second[unique], similarity[unique], method[unique]
    a, b = row_ids[first], row_ids[second]
    side_a = np.array([side[int(r)] for r in a], dtype=object)
    side_b = np.array([side[int(r)] for r in b], dtype=object)
    holdout = (side_a == "hold-out") != (side_b == "hold-out")
    folds = ~holdout & (side_a != side_b)
    label_a, label_b = frame.loc[a, "label"].to_numpy(), frame.loc[b, "label"].to_numpy()
    table = pd.DataFrame({
        "row_id_a": a, "row_id_b": b, "similarity": np.round(similarity, 4),
        "method": method, "split_a": side_a, "split_b": side_b,
        "straddles": np.where(holdout, "hold-out/train-val", np.where(folds, "folds", "none")),
        "label_a": label_a, "label_b": label_b, "labels_disagree": label_a != label_b,
        "text_a": frame.loc[a, "text"].to_numpy(), "text_b": frame.loc[b, "text"].to_numpy(),
    })
    order = {"hold-out/train-val": 0, "folds": 1, "none": 2}
    return table.sort_values(["straddles", "similarity"], key=lambda c: c.map(order) if c.name == "straddles" else -c,
                             kind="stable").reset_index(drop=True)


def command_line(argv: list[str]) -> str:
    return "cli " + " ".join(shlex.quote(a) for a in argv)
