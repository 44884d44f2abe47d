"""What an encoder trains towards: a class index per row, or for label sets (multi-label) a 0/1 float row per
text, trained with a sigmoid per label and binary cross-entropy (``problem_type="multi_label_classification"``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlops.core.errors import ModelError
from mlops.core.multilabel import is_label_sets, label_matrix
from mlops.core.text_dataset import TextDataset


def text_columns(data: TextDataset) -> tuple[list, list | None]:
    return list(data.texts), None if data.text_pairs is None else list(data.text_pairs)


def label_indices(values: Sequence[str], labels: list[str], what: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if str(v) not in index})
    if unknown:
        raise ModelError(f"{what} labels {unknown[:10]} are not in the label set {labels}.")
    return np.fromiter((index[str(v)] for v in values), dtype=np.int64, count=len(values))


def encode_targets(values: Sequence, labels: list[str], what: str) -> np.ndarray:
    """Class indices (int64), or for label sets a (rows, labels) float32 0/1 matrix."""
    if not is_label_sets(values):
        return label_indices(values, labels, what)
    unknown = sorted({label for row in values for label in row} - set(labels))
    if unknown:
        raise ModelError(f"{what} labels {unknown[:10]} are not in the label set {labels}.")
    return label_matrix(values, labels).astype(np.float32)


def check_multi_label_arguments(args) -> None:
    """The options that assume one class per row, refused for label sets with the fix."""
    used = [name for name in ("mixup", "supcon", "calibration") if getattr(args, name, None) is not None]
    if used:
        raise ModelError(f"training_arguments {', '.join(used)} assume one class per row and do not support "
                         "multi-label data; set them to null.")
    if args.label_smoothing:
        raise ModelError("training_arguments.label_smoothing is for one class per row; set it to 0 for multi-label "
                         "data.")


def multi_label_validation_score(proba: np.ndarray, y_val: np.ndarray) -> float:
    """Micro-F1 of the labels at probability 0.5 (thresholds are tuned after training, on these same rows)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_val.astype(np.int8), (proba >= 0.5).astype(np.int8), average="micro", zero_division=0))


def check_pairs(data, uses_pairs: bool) -> None:
    """``ModelError`` when ``data`` has text pairs and the model was trained on single texts, or the reverse."""
    has_pairs = data.text_pairs is not None
    if has_pairs != uses_pairs:
        trained = "sentence pairs" if uses_pairs else "single texts"
        given = "sentence pairs" if has_pairs else "single texts"
        raise ModelError(f"the model was trained on {trained} but was given {given}; "
                         "pass the same text columns as in training.")
