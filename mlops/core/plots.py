"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state).

Each function returns PNG bytes. Sizes and fonts follow the number of classes and models so that 20
class names still fit: long tick labels are rotated and cell counts are dropped when cells get small.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _short(label: str, limit: int = 20) -> str:
    """Long names keep their start and end (they often differ only at the end)."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return label[:head] + "…" + label[-(limit - 1 - head):]


def _label_axis(axis, labels: list[str], which: str) -> None:
    names = [_short(str(label)) for label in labels]
    size = 9 if len(labels) <= 10 else max(7, 9 - (len(labels) - 10) // 5)
    positions = np.arange(len(labels))
    if which == "x":
        width = axis.get_position().width * axis.figure.get_figwidth()  # inches of axis
        rotate = max(map(len, names)) * size / 72 * 0.6 > 0.9 * width / len(labels)  # would neighbours touch?
        axis.set_xticks(positions, names, rotation=90 if rotate else 0, fontsize=size)
    else:
        axis.set_yticks(positions, names, fontsize=size)


def fold_scores(scores: dict[str, list[float]], metric: str) -> bytes:
    """Per-fold ``metric`` of each model: a box per model with every fold as a dot, and the mean as a bar."""
    names = list(scores)
    figure = _figure(max(4.5, 1.1 * len(names) + 2), 3.6)
    axis = figure.add_subplot()
    axis.boxplot([scores[n] for n in names], positions=range(len(names)), widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        values = np.asarray(scores[name])
        axis.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, s=22, zorder=3, color="tab:blue")
        axis.hlines(values.mean(), i - 0.3, i + 0.3, color="tab:red", linewidth=1.5, zorder=4)
    _label_axis(axis, names, "x")
    axis.set_ylabel(f"{metric} per fold")
    axis.set_title(f"backtesting {metric} per fold (red: mean)", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def confusion_matrices(matrix: np.ndarray, labels: list[str], title: str,
                       row_totals: np.ndarray | None = None) -> bytes:
    """Counts and row-normalised (recall per true class) confusion matrices side by side; ``row_totals``
    (multi-label co-occurrence: the rows with each true label) replace the row sums as the normaliser."""
    k = len(labels)
    side = max(3.2, 0.42 * k + 1.6)
    figure = _figure(2 * side + 0.6, side + 0.4)
    rows = matrix.sum(axis=1, keepdims=True) if row_totals is None else np.asarray(row_totals).reshape(-1, 1)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    for position, (values, name, fmt) in enumerate(((matrix, "counts", "d"), (normalised, "row-normalised", ".2f"))):
        axis = figure.add_subplot(1, 2, position + 1)
        image = axis.imshow(values, cmap="Blues", vmin=0, vmax=None if fmt == "d" else 1.0)
        figure.colorbar(image, ax=axis, shrink=0.8)
        if k <= 12:
            threshold = values.max() / 2 if values.max() else 1
            for i in range(k):
                for j in range(k):
                    axis.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                              color="white" if values[i, j] > threshold else "black")
        _label_axis(axis, labels, "x")
        _label_axis(axis, labels, "y")
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{title}: {name}", fontsize=10)
    return _png(figure)


def learning_curves(histories: list[list[dict[str, Any]]], best_epochs: list[int | None], title: str) -> bytes:
    """Training loss and validation macro-F1 per epoch, one line per fold, best epoch starred."""
    figure = _figure(8.5, 3.4)
    loss_axis, f1_axis = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for fold, (history, best) in enumerate(zip(histories, best_epochs, strict=True), 1):
        epochs = [record["epoch"] for record in history]
        line, = loss_axis.plot(epochs, [record["train_loss"] for record in history], marker="o", markersize=3,
                               label=f"fold {fold}")
        f1 = [record.get("validation_f1_macro") for record in history]
        if any(value is not None for value in f1):
            f1_axis.plot(epochs, f1, marker="o", markersize=3, color=line.get_color(), label=f"fold {fold}")
            if best is not None and best in epochs:
                f1_axis.scatter([best], [f1[epochs.index(best)]], marker="*", s=140, color=line.get_color(),
                                edgecolor="black", zorder=4)
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="training loss")
    f1_axis.set(xlabel="epoch", ylabel="validation macro-F1", title="validation macro-F1 (★ best epoch, kept)")
    for axis in (loss_axis, f1_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        if len(histories) <= 10:
            axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def reliability_diagram(curves: dict[str, dict[str, Any]], title: str) -> bytes:
    """Accuracy against confidence per bin for each named set of predictions, with its ECE."""
    figure = _figure(4.6, 4.2)
    axis = figure.add_subplot()
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        bins = curve["bins"]
        axis.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", markersize=4,
                  label=f"{name} (ECE {curve['ece']:.3f}, n={curve['n']})")
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top-class probability)", ylabel="accuracy")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="upper left")
    axis.grid(alpha=0.3)
    return _png(figure)


def label_distribution(counts: dict[str, float], ylabel: str = "rows", title: str = "rows per label") -> bytes:
    """A bar per label (rows by default; a per-label score with ``ylabel`` and ``title``)."""
    labels = list(counts)
    figure = _figure(max(3.2, 0.45 * len(labels) + 1.5), 2.6)
    axis = figure.add_subplot()
    axis.bar(range(len(labels)), [counts[label] for label in labels], color="tab:blue")
    _label_axis(axis, labels, "x")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def labelled_rows_curves(curves: dict[str, list[tuple[float, float, float, float]]], title: str,
                         ylabel: str = "macro-F1 on the fold's test rows", fitted: dict[str, Any] | None = None,
                         ) -> bytes:
    """One line per name through (labelled rows, mean, low, high) points, the fold spread shaded; ``fitted``
    optionally maps a name to (rows array, fitted scores) drawn dashed."""
    figure = _figure(6.0, 3.8)
    axis = figure.add_subplot()
    for name, points in curves.items():
        rows, mean, low, high = (np.asarray(v, dtype=float) for v in zip(*points, strict=True))
        line, = axis.plot(rows, mean, marker="o", markersize=4, label=name)
        axis.fill_between(rows, low, high, alpha=0.15, color=line.get_color())
        if fitted and name in fitted:
            x, y = fitted[name]
            axis.plot(x, y, linestyle="--", linewidth=1, color=line.get_color())
    axis.set_xlabel("labelled training rows")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)
