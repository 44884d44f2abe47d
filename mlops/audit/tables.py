"""The audit's tables: flagged rows, per-class noise, and near-duplicate pairs with the split of each row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.audit.label_issues import LabelIssues
from mlops.experiments.service import Experiment

if TYPE_CHECKING:
    import pandas as pd


def issue_table(rows: pd.DataFrame, y: np.ndarray, proba: np.ndarray, issues: LabelIssues,
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


def noise_rows(issues: LabelIssues, labels: list[str]) -> list[dict[str, Any]]:
    """Per given label: rows, the confident joint's estimate of rows truly of another class, and rows flagged."""
    given = np.asarray(issues.given)
    flagged = np.bincount(given[issues.is_issue], minlength=len(labels))
    return [{"label": label, **entry, "flagged": int(flagged[j])}
            for j, (label, entry) in enumerate(zip(labels, issues.noise_by_class(), strict=True))]


def sides(experiment: Experiment, row_ids: np.ndarray) -> dict[int, str]:
    """Where each row sits: the hold-out, or the backtesting fold whose test set holds it."""
    side = {int(r): "hold-out" for r in experiment.plan.holdout_test}
    for k, fold in enumerate(experiment.plan.backtesting):
        side.update({int(r): f"fold {k + 1}" for r in fold.test})
    return {int(r): side.get(int(r), "train-val") for r in row_ids}


def pair_table(experiment: Experiment, frame, found: list) -> pd.DataFrame:
    """One row per near-duplicate pair (the first method that found it names it), across-split pairs first."""
    import pandas as pd

    row_ids = frame.index.to_numpy()
    side = sides(experiment, row_ids)
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
