"""Reading labelled tables (CSV/Parquet), validating their columns, and fingerprinting them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file {path} does not exist; check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a CSV or Parquet file.")
    if path.stat().st_size == 0:
        raise DataError(f"input file {path} is empty; expected a header row and data rows.")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


@contextmanager
def _reading(path: Path, encoding: str) -> Iterator[None]:
    """Turn every way reading a table can fail into one DataError naming the file and the fix."""
    import pandas as pd
    import pyarrow as pa

    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot decode {path} as {encoding} (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
            "pass the file's encoding with --encoding (for example --encoding latin-1 or --encoding cp1252)."
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1.") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no rows or header; expected a header row and data rows.") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"cannot parse {path} as CSV: {exc}. Check quoting and the delimiter.") from None
    except (pa.ArrowException, ValueError, OSError) as exc:  # corrupt Parquet, usecols mismatch, permissions
        raise DataError(f"cannot read {path}: {exc}") from None


def read_table(path: Path, encoding: str = "utf-8", columns: list[str] | None = None) -> pd.DataFrame:
    """Read a whole CSV/TSV/Parquet file, turning parser problems into DataError."""
    import pandas as pd

    _check_readable(path)
    with _reading(path, encoding):
        if _is_parquet(path):
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, sep=_separator(path), encoding=encoding, usecols=columns, dtype=str,
                           keep_default_na=False, na_values=[""])


def table_columns(path: Path, encoding: str = "utf-8") -> list[str]:
    import pandas as pd

    _check_readable(path)
    with _reading(path, encoding):
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, sep=_separator(path), encoding=encoding, nrows=0).columns)


def iter_table_chunks(path: Path, chunk_rows: int, encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
    """Yield the file in chunks of at most ``chunk_rows`` rows, never holding it all in memory."""
    import pandas as pd

    _check_readable(path)
    with _reading(path, encoding):
        if _is_parquet(path):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        yield from pd.read_csv(path, sep=_separator(path), encoding=encoding, dtype=str, chunksize=chunk_rows,
                               keep_default_na=False, na_values=[""])


def count_rows(path: Path, encoding: str = "utf-8") -> int | None:
    """Number of data rows, cheaply where possible (Parquet metadata); None for CSV (unknown without a scan)."""
    if _is_parquet(path):
        import pyarrow.parquet as pq

        with _reading(path, encoding):
            return pq.ParquetFile(path).metadata.num_rows
    return None


def require_columns(found: list[str], wanted: dict[str, str | None], path: Path) -> None:
    """``wanted`` maps option name (e.g. '--text-column') to column name; None means not requested."""
    for option, column in wanted.items():
        if column is not None and column not in found:
            raise DataError(
                f"column {column!r} (from {option}) not found in {path}; columns found: {found}. "
                f"Pass the right name with {option}."
            )


@dataclass
class LabelledData:
    """The usable rows of an input file, with their original row numbers."""

    frame: pd.DataFrame  # columns: text, label, optionally text_pair, group; index = original row number
    dropped_empty: int = 0
    labels: list[str] = field(default_factory=list)

    @property
    def row_ids(self) -> np.ndarray:
        return self.frame.index.to_numpy()


def load_labelled_data(
    path: Path,
    *,
    text_column: str,
    target_column: str,
    text_pair_column: str | None = None,
    group_column: str | None = None,
    encoding: str = "utf-8",
    strict: bool = False,
) -> LabelledData:
    """Load and clean a labelled table; rows with empty text or label are dropped (or refused if strict)."""
    import pandas as pd

    columns = table_columns(path, encoding)
    require_columns(
        columns,
        {"--text-column": text_column, "--target-column": target_column,
         "--text-pair-column": text_pair_column, "--group-column": group_column},
        path,
    )
    wanted = [c for c in dict.fromkeys([text_column, target_column, text_pair_column, group_column]) if c]
    raw = read_table(path, encoding, columns=wanted)
    if raw.empty:
        raise DataError(f"input file {path} has a header but no data rows.")
    frame = pd.DataFrame(index=raw.index)
    frame["text"] = raw[text_column]
    frame["label"] = raw[target_column]
    if text_pair_column:
        frame["text_pair"] = raw[text_pair_column]
    if group_column:
        frame["group"] = raw[group_column]
    for column in frame.columns:
        frame[column] = frame[column].astype("string").str.strip() if column != "group" else frame[column].astype("string")
    required = ["text", "label"] + (["text_pair"] if text_pair_column else [])
    empty = frame[required].isna().any(axis=1) | (frame[required] == "").any(axis=1)
    n_empty = int(empty.sum())
    if n_empty:
        where = (frame.index[empty][:5] + 2).tolist()  # +2: header line and 1-based numbering
        if strict:
            raise DataError(
                f"{n_empty} rows of {path} have an empty or missing text or label (first at file lines {where}); "
                "fix them, or drop --strict to skip them with a count."
            )
        logger.warning("dropped %d rows with empty or missing text/label (file lines %s...); use --strict to fail instead",
                       n_empty, where)
        frame = frame[~empty]
    if frame.empty:
        raise DataError(f"no usable rows in {path}: every row has an empty text or label.")
    if group_column:  # a row without a group value is a group of its own, not one big shared group
        missing = frame["group"].isna() | (frame["group"].astype(str).str.strip() == "")
        frame.loc[missing, "group"] = [f"\x00row{i}" for i in frame.index[missing]]
    frame = frame.astype(object)
    labels = sorted(frame["label"].unique().tolist())
    if len(labels) < 2:
        raise DataError(
            f"column {target_column!r} of {path} has a single class ({labels[0]!r}); a classifier needs at least two. "
            "Check --target-column."
        )
    return LabelledData(frame=frame, dropped_empty=n_empty, labels=labels)
