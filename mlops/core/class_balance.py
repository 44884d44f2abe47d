"""``class_weight: auto`` for any model family: balanced weights only where the training classes are imbalanced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: ``auto`` turns ``balanced`` on above this largest / smallest training-class ratio.
AUTO_IMBALANCE_RATIO = 1.5


def resolve_class_weight(spec: Any, labels: Sequence[str], y: Sequence) -> tuple[Any, str]:
    """``spec`` as given, except ``"auto"``: ``"balanced"`` or None from the training rows' class counts ``y``
    (class indices or labels); returned with the reason, for the log and the run's record."""
    if spec != "auto":
        return spec, f"training_arguments.class_weight {spec!r}"
    if np.ndim(y) == 2:  # label sets: compare the labels' row counts
        counts = np.asarray(y).sum(axis=0)
        ratio = float(counts.max() / max(counts.min(), 1)) if len(counts) > 1 else 1.0
        if ratio > AUTO_IMBALANCE_RATIO:
            return "balanced", f"auto: most / least frequent label {ratio:.2f} > {AUTO_IMBALANCE_RATIO}"
        return None, f"auto: most / least frequent label {ratio:.2f} <= {AUTO_IMBALANCE_RATIO}, labels left unweighted"
    _, counts = np.unique(np.asarray(list(y)).astype(str), return_counts=True)
    ratio = float(counts.max() / counts.min()) if len(counts) > 1 else 1.0
    if ratio > AUTO_IMBALANCE_RATIO:
        return "balanced", f"auto: largest / smallest class {ratio:.2f} > {AUTO_IMBALANCE_RATIO}"
    return None, f"auto: largest / smallest class {ratio:.2f} <= {AUTO_IMBALANCE_RATIO}, classes left unweighted"
