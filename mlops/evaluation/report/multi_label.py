"""The report's views of a multi-label run: per-label scores and the co-occurrence of true and predicted labels
(the multi-label stand-in for a confusion matrix)."""

from __future__ import annotations

import numpy as np

from mlops.core import plots
from mlops.evaluation.report.collect import RunView
from mlops.evaluation.report.document import Image, Table, Text


def per_label_blocks(model_name: str, run: RunView, labels: list[str], name: str) -> list[Text | Table | Image]:
    """A per-label precision/recall/F1/support table, an F1 bar per label, and the co-occurrence matrix."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = run.label_sets
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    rows = [[label, precision[j], recall[j], f1[j], int(support[j]), int(y_pred[:, j].sum())]
            for j, label in enumerate(labels)]
    co_occurrence = y_true.T.astype(np.int64) @ y_pred.astype(np.int64)
    slug = f"{model_name}_{name.split()[0].replace('-', '')}"
    return [
        Table(["label", "precision", "recall", "F1", "support", "predicted"], rows, f"Per label, {name}"),
        Image(f"{slug}_label_f1", plots.label_distribution(dict(zip(labels, map(float, f1))), "F1",
                                                            f"F1 per label, {name.split(' (')[0]}"), "F1 per label"),
        Image(f"{slug}_co_occurrence", plots.confusion_matrices(co_occurrence, labels, name.split(" (")[0],
                                                                   row_totals=y_true.sum(axis=0)),
              "co-occurrence: rows with the true label (row) that were predicted the label (column); normalised "
              "by the rows with the true label, so the diagonal is each label's recall"),
    ]
