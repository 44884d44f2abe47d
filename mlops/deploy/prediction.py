"""Labelling new data with a loaded model (see ``mlops.core.model_folder``), in chunks, and scoring predictions."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.core.errors import DataError, ExperimentError
from mlops.core.io import ensure_directory, file_problem, remove_stale_scratch, scratch_name
from mlops.core.metrics import PREDICTED_COLUMN, compute_metrics, proba_column
from mlops.core.model_folder import LoadedModel
from mlops.core.multilabel import DEFAULT_THRESHOLD, PREDICTED_LABELS_COLUMN, decide, join_labels, label_sets_of
from mlops.core.text_dataset import TextDataset
from mlops.data.tables import DEFAULT_MAX_TEXT_CHARS, clip_texts, check_text_columns, iter_table_chunks, require_columns, table_columns

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 4096


def _check_pair_usage(loaded: LoadedModel, has_pairs: bool, option: str) -> None:
    if has_pairs != loaded.needs_text_pair:
        if loaded.needs_text_pair:
            raise ExperimentError(f"{loaded.directory} was trained on sentence pairs; pass {option}.")
        raise ExperimentError(f"{loaded.directory} was trained on single texts; drop {option}.")


def predict_texts(loaded: LoadedModel, texts: Sequence[str], text_pairs: Sequence[str] | None = None):
    """(label, {label: probability}) for each text; for a multi-label model the first item is the tuple of labels
    whose probability reaches their threshold."""
    _check_pair_usage(loaded, text_pairs is not None, "--text-pair")
    proba = loaded.predict_proba(TextDataset(texts=list(texts), text_pairs=list(text_pairs) if text_pairs else None))
    labels = loaded.labels
    if loaded.task.multi_label:
        chosen = label_sets_of(decide(proba, loaded.thresholds), labels)
        return [(chosen[i], dict(zip(labels, map(float, row), strict=True))) for i, row in enumerate(proba)]
    return [(labels[int(row.argmax())], dict(zip(labels, map(float, row), strict=True))) for row in proba]


def estimate_data_rows(path: Path) -> int | None:
    """A cheap upper estimate of the data rows (newlines minus the header) for the progress bar."""
    from mlops.data.tables import count_rows

    exact = count_rows(path)
    if exact is not None:
        return exact
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            lines += block.count(b"\n")
    return max(lines - 1, 0)


@dataclass
class PredictionSummary:
    output_file: Path
    rows: int
    label_counts: dict[str, int]
    empty_texts: int


def label_chunk(loaded: LoadedModel, chunk: pd.DataFrame, text_column: str, text_pair_column: str | None,
                max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> tuple[pd.DataFrame, int]:
    """``chunk`` with ``predicted_label`` and one ``proba_<label>`` column per class added, and how many
    of its texts were empty. predict-new and the server's CSV endpoint both write exactly this; the model
    sees each text cut to ``max_text_chars`` (the output keeps the input's columns as they were)."""
    texts = clip_texts(chunk[text_column].fillna("").astype(str), max_text_chars, "input texts")
    pairs = (clip_texts(chunk[text_pair_column].fillna("").astype(str), max_text_chars, "second texts").tolist()
             if text_pair_column else None)
    proba = loaded.predict_proba(TextDataset(texts=texts.tolist(), text_pairs=pairs))
    labels = loaded.labels
    chunk = chunk.copy()
    task = loaded.task
    if task.multi_label:  # the labels at or above their thresholds, joined as in training
        chunk[PREDICTED_LABELS_COLUMN] = [join_labels(row, task.separator)
                                          for row in label_sets_of(decide(proba, loaded.thresholds), labels)]
    else:
        chunk[PREDICTED_COLUMN] = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
    for j, label in enumerate(labels):
        chunk[proba_column(label)] = proba[:, j]
    return chunk, int((texts.str.strip() == "").sum())


def predict_file(
    loaded: LoadedModel,
    input_file: Path,
    output_file: Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
) -> PredictionSummary:
    """Stream ``input_file`` through the model; the output appears only once it is complete."""
    input_file, output_file = Path(input_file), Path(output_file)
    if output_file.exists() and not force:
        raise ExperimentError(f"{output_file} already exists; pass --force to overwrite it or choose --output-file.")
    if output_file.resolve() == input_file.resolve():
        raise ExperimentError("--output-file must differ from --input-file; the input would be overwritten.")
    columns = table_columns(input_file, encoding)
    _check_pair_usage(loaded, text_pair_column is not None, "--text-pair-column")
    require_columns(columns, {"--text-column": text_column, "--text-pair-column": text_pair_column}, input_file)
    check_text_columns(input_file, {"--text-column": text_column, "--text-pair-column": text_pair_column})
    labels = loaded.labels
    ensure_directory(output_file.parent)
    remove_stale_scratch(output_file.parent, target=output_file.name)  # what a killed predict-new left
    partial = scratch_name(output_file, "partial")
    counts = dict.fromkeys(labels, 0)
    rows = empty = 0
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            for chunk in iter_table_chunks(input_file, chunk_rows, encoding):
                chunk, n_empty = label_chunk(loaded, chunk, text_column, text_pair_column, max_text_chars)
                empty += n_empty
                chunk.to_csv(handle, header=rows == 0, index=False)
                if loaded.task.multi_label:  # rows predicted with each label
                    for label in labels:
                        counts[label] += int(chunk[proba_column(label)].ge(_threshold_of(loaded, label)).sum())
                else:
                    for label, n in zip(*np.unique(chunk[PREDICTED_COLUMN], return_counts=True), strict=True):
                        counts[str(label)] += int(n)
                rows += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
        if rows == 0:
            raise ExperimentError(f"{input_file} has no data rows to predict.")
        os.replace(partial, output_file)
    except OSError as exc:  # the reader and the model report their own errors: this is the output's
        raise file_problem(exc, output_file, "write", use_filename=False) from None
    finally:
        partial.unlink(missing_ok=True)
    if empty:
        logger.warning("%d rows had an empty text; they were still labelled (from the model's prior)", empty)
    return PredictionSummary(output_file=output_file, rows=rows, label_counts=counts, empty_texts=empty)


def _threshold_of(loaded: LoadedModel, label: str) -> float:
    return (loaded.thresholds or [DEFAULT_THRESHOLD] * len(loaded.labels))[loaded.labels.index(label)]


#: Columns that, when both files have them, must agree row by row for a positional match to be trusted.
POSITION_CHECK_COLUMNS = ("id", "text", "text_pair")


def _check_positions(predictions, truth, predictions_file: Path, ground_truth_file: Path) -> None:
    """Rows matched by position are checked on every column the two files share among ``id``, ``text`` and
    ``text_pair``: a file in another order is an error naming the first rows that differ, not a wrong score."""
    shared = [c for c in POSITION_CHECK_COLUMNS if c in predictions.columns and c in truth.columns]
    if not shared:
        logger.warning("rows are matched by position and the files share no id or text column to check that "
                       "order: make sure %s is in the order of %s, or pass --id-column", predictions_file,
                       ground_truth_file)
        return
    for column in shared:
        left = predictions[column].astype(str).str.strip().to_numpy()
        right = truth[column].astype(str).str.strip().to_numpy()
        differ = np.flatnonzero(left != right)
        if len(differ):
            examples = "; ".join(f"row {i + 1}: {_short_text(left[i])!r} vs {_short_text(right[i])!r}"
                                 for i in differ[:3])
            raise DataError(
                f"rows are matched by position, but the {column!r} column differs on {len(differ)} of {len(left)} "
                f"rows between {predictions_file} and {ground_truth_file} ({examples}); the files are not in the "
                "same order. Pass --id-column with a column both files have to match rows by it."
            )


def _short_text(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def evaluate_predictions(
    predictions_file: Path,
    ground_truth_file: Path,
    *,
    prediction_column: str = PREDICTED_COLUMN,
    target_column: str = "label",
    id_column: str | None = None,
    encoding: str = "utf-8",
    label_separator: str | None = None,
) -> dict[str, Any]:
    """Metrics of a predictions file against labelled ground truth, matched by row order or an id column. With
    ``label_separator`` both columns hold label sets joined by it (multi-label; the prediction column defaults
    to ``predicted_labels``), and an empty cell is the empty set."""
    import pandas as pd

    from mlops.data.tables import read_table

    if label_separator is not None and prediction_column == PREDICTED_COLUMN:
        prediction_column = PREDICTED_LABELS_COLUMN

    if prediction_column == target_column:
        raise DataError(f"--prediction-column and --target-column are both {target_column!r}; they must name "
                        "different columns (the prediction and the truth).")
    predictions = read_table(predictions_file, encoding)
    truth = read_table(ground_truth_file, encoding)
    require_columns(list(predictions.columns), {"--prediction-column": prediction_column, "--id-column": id_column},
                    predictions_file)
    require_columns(list(truth.columns), {"--target-column": target_column, "--id-column": id_column},
                    ground_truth_file)
    blank = (pd.Series(False, index=truth.index) if label_separator is not None else
             _blank_truth(truth[target_column], ground_truth_file, target_column))
    if id_column:
        truth = truth[~blank]
        for frame, path in ((truth, ground_truth_file), (predictions, predictions_file)):
            frame[id_column] = frame[id_column].astype(str)
            if frame[id_column].duplicated().any():
                raise DataError(f"--id-column {id_column!r} has duplicate values in {path}; ids must be unique.")
        merged = truth[[id_column, target_column]].merge(
            predictions.drop(columns=[target_column], errors="ignore"), on=id_column, how="inner"
        )
        if len(merged) != len(truth):
            raise ExperimentError(f"{len(truth) - len(merged)} ground-truth ids have no prediction in {predictions_file}.")
    else:
        if len(predictions) != len(truth):
            raise ExperimentError(
                f"{predictions_file} has {len(predictions)} rows but {ground_truth_file} has {len(truth)}; rows are "
                "matched by position, so pass --id-column to match them by an id instead."
            )
        _check_positions(predictions, truth, predictions_file, ground_truth_file)
        merged = pd.DataFrame({target_column: truth[target_column].to_numpy(),
                               prediction_column: predictions[prediction_column].to_numpy()})
        for column in predictions.columns:
            if column.startswith("proba_"):
                merged[column] = predictions[column].to_numpy()
        merged = merged[~blank.to_numpy()]
    if merged.empty:
        raise DataError(f"every --target-column {target_column!r} value of {ground_truth_file} is empty; there is "
                        "nothing to score. Check --target-column.")
    if label_separator is not None:
        return _evaluate_label_sets(merged, target_column, prediction_column, label_separator, ground_truth_file,
                                    predictions_file)
    y_true = merged[target_column].astype(str).str.strip().to_numpy()
    y_pred = merged[prediction_column].fillna("").astype(str).str.strip().to_numpy()
    _check_shared_labels(set(y_true), set(y_pred), ground_truth_file, predictions_file)
    labels = sorted(set(y_true) | set(y_pred))
    return _scored(y_true, y_pred, labels, merged, predictions_file, int(blank.sum()))


def _evaluate_label_sets(merged: pd.DataFrame, target_column: str, prediction_column: str, separator: str,
                         ground_truth_file: Path, predictions_file: Path) -> dict[str, Any]:
    def sets(column: str) -> list[tuple[str, ...]]:
        return [tuple(dict.fromkeys(p.strip() for p in str(cell).split(separator) if p.strip()))
                for cell in merged[column].fillna("").astype(str)]

    y_true, y_pred = sets(target_column), sets(prediction_column)
    seen_true = {label for row in y_true for label in row}
    seen_pred = {label for row in y_pred for label in row}
    if seen_pred:
        _check_shared_labels(seen_true, seen_pred, ground_truth_file, predictions_file)
    return _scored(y_true, y_pred, sorted(seen_true | seen_pred), merged, predictions_file, 0)


def _scored(y_true, y_pred, labels: list[str], merged: pd.DataFrame, predictions_file: Path,
            dropped: int) -> dict[str, Any]:
    """The metrics of the matched rows, with the file's proba_<label> columns when it has one per label."""
    proba_columns = [proba_column(label) for label in labels]
    proba = None
    if all(c in merged.columns for c in proba_columns):
        try:
            proba = merged[proba_columns].astype(float).to_numpy()
        except ValueError:
            raise DataError(f"the proba_* columns of {predictions_file} are not all numbers.") from None
    metrics = compute_metrics(y_true, proba, labels, y_pred=y_pred)
    metrics["labels"] = labels
    metrics["rows_dropped_empty_truth"] = dropped
    return metrics


def _blank_truth(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Which ground-truth labels are empty (dropped with a count, as generate-splits does)."""
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any():
        where = (values.index[blank][:5] + 2).tolist()  # +2: header line and 1-based numbering
        logger.warning("dropped %d rows of %s with an empty label (column %r; file lines %s...); they are not scored",
                       int(blank.sum()), path, column, where)
    return blank


def _check_shared_labels(truth: set[str], predicted: set[str], truth_file: Path, predictions_file: Path) -> None:
    """Refuse to score two files that share no label (say 0/1 against negative/positive): every row would count
    as wrong, and the 0.0 would say nothing about the model."""
    if truth & predicted:
        return

    def shown(values: set[str]) -> str:
        ordered = sorted(values)
        return str(ordered[:10])[:-1] + (f", ... {len(ordered) - 10} more]" if len(ordered) > 10 else "]")

    raise DataError(
        f"the ground truth and the predictions share no label: {truth_file} has {shown(truth)}, {predictions_file} "
        f"has {shown(predicted)}. Check --target-column and --prediction-column, or write both files with the same "
        "label names (for example map 0/1 to negative/positive)."
    )
