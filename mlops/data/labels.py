"""Label columns as read from a file: one class per row (spellings that differ only by case or spacing refused or
merged), or label sets (multi-label), from one separated column or from 0/1 columns."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops.core.errors import DataError
from mlops.core.multilabel import Task

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def reconcile_labels(labels: pd.Series, path: Path, column: str,
                      normalize: bool) -> tuple[pd.Series, dict[str, list[str]]]:
    """Labels equal once case-folded and whitespace-collapsed ('Positive' / 'positive', 'very  good' /
    'very good') are one class spelt several ways: refuse them, or with ``normalize`` map each group to
    its most frequent spelling (ties: the first in sorted order)."""
    from mlops.data.splitting import normalise_text

    counts = labels.value_counts()
    groups: dict[str, list[str]] = {}
    for spelling, _ in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        groups.setdefault(normalise_text(spelling), []).append(spelling)
    colliding = [spellings for spellings in groups.values() if len(spellings) > 1]
    if not colliding:
        return labels, {}
    described = "; ".join(" / ".join(f"{s!r} ({counts[s]} rows)" for s in spellings) for spellings in colliding)
    if not normalize:
        raise DataError(
            f"labels of column {column!r} in {path} differ only by case or spacing, so they would be separate "
            f"classes: {described}. Fix them in the file, or pass --normalize-labels to merge each group into its "
            "most frequent spelling."
        )
    logger.warning("merged labels that differ only by case or spacing into the most frequent spelling "
                   "(--normalize-labels): %s", described)
    mapping = {spelling: spellings[0] for spellings in colliding for spelling in spellings[1:]}
    return labels.map(lambda value: mapping.get(value, value)), {s[0]: s[1:] for s in colliding}


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


def parse_label_sets(raw: pd.DataFrame, path: Path, task: Task, target_column: str) -> pd.Series:
    """Each row's labels as a tuple, as spelt in the file: from one column split at ``task.separator``, or
    from ``task.target_columns`` (0/1, true/false or yes/no; a label per column named by its header)."""
    import pandas as pd

    if not task.target_columns:
        cells = raw[target_column].astype("string").fillna("").tolist()
        return pd.Series([tuple(dict.fromkeys(piece.strip() for piece in str(cell).split(task.separator) if piece.strip()))
                          for cell in cells], index=raw.index, dtype=object)
    flags = {}
    for column in task.target_columns:
        values = raw[column].astype("string").fillna("").str.strip().str.lower()
        bad = ~values.isin(_TRUE | _FALSE)
        if bad.any():
            line = int(raw.index[bad][0]) + 2
            raise DataError(f"column {column!r} (from --target-columns) of {path} must hold 0/1 (or true/false, "
                            f"yes/no) for each row; found {raw[column].iloc[int(bad.argmax())]!r} at file line {line}. "
                            "Fix the cell, or leave the column out of --target-columns.")
        flags[column] = values.isin(_TRUE).to_numpy()
    names = list(task.target_columns)
    matrix = np.column_stack([flags[c] for c in names])
    return pd.Series([tuple(n for n, on in zip(names, row) if on) for row in matrix], index=raw.index, dtype=object)


def reconcile_label_sets(label_sets: pd.Series, path: Path, what: str,
                          normalize: bool) -> tuple[pd.Series, list[str], dict[str, list[str]]]:
    """``reconcile_labels`` over the labels inside the sets; the sets come back as tuples in label order."""
    import pandas as pd

    exploded = pd.Series([label for labels in label_sets for label in labels], dtype=object)
    if exploded.empty:
        raise DataError(f"no row of {path} has a label in {what}; check --label-separator or --target-columns.")
    _, merged = reconcile_labels(exploded, path, what, normalize)
    mapping = {other: kept for kept, others in merged.items() for other in others}
    labels = sorted({mapping.get(label, label) for label in exploded})
    if len(labels) < 2:
        raise DataError(f"{what} of {path} holds a single label ({labels[0]!r}); a multi-label task needs at least "
                        "two. Check --label-separator or --target-columns.")
    order = {label: i for i, label in enumerate(labels)}
    sets = pd.Series([tuple(sorted({mapping.get(label, label) for label in row}, key=order.get)) for row in label_sets],
                     index=label_sets.index, dtype=object)
    return sets, labels, merged
