"""``cli suggest-labels``: stream an unlabelled pool through a trained model and keep the rows most worth labelling.

Only a bounded set of candidates is held at any time (``n`` rows, or ``n`` x 10 for ``diverse``), so a pool of
millions of rows streams in chunks; ``random`` keeps the ``n`` rows with the smallest seeded key per position,
the same draw whatever the chunk size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mlops.core.errors import DataError, ExperimentError
from mlops.core.io import write_text_atomic
from mlops.core.metrics import PREDICTED_COLUMN, proba_column
from mlops.core.text_dataset import TextDataset
from mlops.data.tables import iter_table_chunks, require_columns, table_columns
from mlops.labelling.strategies import DIVERSE_POOL_FACTOR, check_strategy, diverse_pick, random_keys, uncertainty

if TYPE_CHECKING:
    import pandas as pd

    from mlops.core.model_folder import LoadedModel

logger = logging.getLogger(__name__)

ROW_COLUMN = "pool_row"  # 0 = the pool file's first data row


@dataclass
class Suggestions:
    output_file: Path
    pool_rows: int
    rows: int
    strategy: str


def _keep_best(kept: pd.DataFrame | None, chunk: pd.DataFrame, limit: int) -> pd.DataFrame:
    import pandas as pd

    merged = chunk if kept is None else pd.concat([kept, chunk], ignore_index=True)
    if len(merged) <= limit:
        return merged
    order = np.argsort(-merged["_key"].to_numpy(), kind="stable")[:limit]
    return merged.iloc[np.sort(order)].reset_index(drop=True)


def suggest_labels(loaded: LoadedModel, input_file: Path, output_file: Path, *, n: int, strategy: str,
                   text_column: str = "text", encoding: str = "utf-8", chunk_rows: int = 10_000, seed: int = 0,
                   force: bool = False, on_progress: Callable[[int], None] | None = None) -> Suggestions:
    check_strategy(strategy)
    input_file, output_file = Path(input_file), Path(output_file)
    if n < 1:
        raise DataError(f"--n must be at least 1, found {n}.")
    if output_file.exists() and not force:
        raise ExperimentError(f"{output_file} already exists; pass --force to overwrite it or choose --output-file.")
    if output_file.resolve() == input_file.resolve():
        raise ExperimentError("--output-file must differ from --input-file; the pool would be overwritten.")
    require_columns(table_columns(input_file, encoding), {"--text-column": text_column}, input_file)
    limit = n * DIVERSE_POOL_FACTOR if strategy == "diverse" else n
    kept, seen = None, 0
    labels = loaded.labels
    for chunk in iter_table_chunks(input_file, chunk_rows, encoding):
        texts = chunk[text_column].fillna("").astype(str)
        proba = loaded.predict_proba(TextDataset(texts=texts.tolist()))
        chunk = chunk.copy()
        chunk.insert(0, ROW_COLUMN, np.arange(seen, seen + len(chunk)))
        score = uncertainty(proba, strategy)
        chunk["_key"] = -random_keys(len(chunk), seed, seen) if strategy == "random" else score
        chunk["score"] = score
        chunk[PREDICTED_COLUMN] = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
        for j, label in enumerate(labels):
            chunk[proba_column(label)] = proba[:, j]
        kept = _keep_best(kept, chunk, limit)
        seen += len(chunk)
        if on_progress:
            on_progress(len(chunk))
    if kept is None or seen == 0:
        raise DataError(f"{input_file} has no rows to rank.")
    if strategy == "diverse":
        order = diverse_pick(kept[text_column].fillna("").astype(str).tolist(), kept["score"].to_numpy(), n, seed)
    else:
        order = np.argsort(-kept["_key"].to_numpy(), kind="stable")[:n]
    chosen = kept.iloc[order].drop(columns="_key").reset_index(drop=True)
    chosen.insert(0, "rank", np.arange(1, len(chosen) + 1))
    write_text_atomic(output_file, chosen.to_csv(index=False))
    logger.info("ranked %d pool rows by %s; wrote the top %d to %s", seen, strategy, len(chosen), output_file)
    return Suggestions(output_file, seen, len(chosen), strategy)
