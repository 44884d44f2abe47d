"""Reading labelled tables (CSV/Parquet), validating their columns, and fingerprinting them."""

from __future__ import annotations

import codecs
import csv
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlops.core.errors import DataError
from mlops.core.multilabel import Task
from mlops.data.labels import parse_label_sets, reconcile_label_sets, reconcile_labels

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def _check_readable(path: Path, encoding: str = "utf-8") -> None:
    if not path.exists():
        raise DataError(f"file {path} does not exist; check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a CSV or Parquet file.")
    if path.stat().st_size == 0:
        raise DataError(f"input file {path} is empty; expected a header row and data rows.")
    if not _is_parquet(path) and _looks_binary(path, encoding):
        raise DataError(f"{path} looks like a binary file (it holds NUL bytes), not a text table; expected a CSV, "
                        "TSV or Parquet file (.parquet/.pq for Parquet), or pass --encoding for UTF-16 text.")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


#: How much of a .csv/.txt file csv.Sniffer sees, and the delimiters it may find besides the comma.
SNIFF_BYTES = 64 * 1024
OTHER_DELIMITERS = ";\t|"


def _separator(path: Path, encoding: str = "utf-8") -> str:
    """Tab for .tsv; for .csv/.txt a comma, or the delimiter detected when commas leave the header one column."""
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix not in (".csv", ".txt"):
        return ","
    try:
        stamp = path.stat()
    except OSError:
        return ","  # the reader reports the problem
    return _sniffed_separator(str(path), stamp.st_size, stamp.st_mtime_ns, encoding)


def _fields(line: str, delimiter: str) -> int:
    return len(next(csv.reader([line], delimiter=delimiter), []))


@functools.lru_cache(maxsize=64)
def _sniffed_separator(path: str, size: int, mtime_ns: int, encoding: str) -> str:
    """csv.Sniffer over the first SNIFF_BYTES (restricted to ';', tab and '|'), used only when the header has a
    single column with commas and several with the sniffed delimiter; else the header alone decides, if
    exactly one of those delimiters splits it. (size, mtime_ns): a changed file is sniffed again."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(SNIFF_BYTES)
        lines = raw.decode(encoding, errors="replace").splitlines()
    except (OSError, LookupError):
        return ","
    if len(raw) == SNIFF_BYTES:
        lines = lines[:-1]  # the last line may be cut
    if not lines or _fields(lines[0], ",") > 1:
        return ","
    header = lines[0]
    try:
        found = csv.Sniffer().sniff("\n".join(lines[:200]), delimiters=OTHER_DELIMITERS).delimiter
    except csv.Error:
        candidates = [d for d in OTHER_DELIMITERS if _fields(header, d) > 1]
        found = candidates[0] if len(candidates) == 1 else ","
    if found == "," or _fields(header, found) < 2:
        return ","
    logger.info("%s: the header is one column with commas but %d with %r; reading it %s-separated", path,
                _fields(header, found), found, {";": "semicolon", "\t": "tab", "|": "pipe"}[found])
    return found


def _decode_error_position(path: Path, encoding: str) -> tuple[int, int, bytes] | None:
    """(line, byte offset, bad bytes) of the first byte of ``path`` that ``encoding`` cannot decode, read in
    chunks (pandas' own error gives an offset inside its read buffer, not in the file)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
        fed = newlines = 0
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                pending = decoder.getstate()[0]
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:  # exc.start counts from the pending bytes of the last chunk
                    in_chunk = max(exc.start - len(pending), 0)
                    return (newlines + chunk[:in_chunk].count(b"\n") + 1, fed - len(pending) + exc.start,
                            (pending + chunk)[exc.start:exc.end])
                fed += len(chunk)
                newlines += chunk.count(b"\n")
            pending = decoder.getstate()[0]
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:  # the file ends inside a character
                return newlines + 1, fed - len(pending), pending
    except (OSError, LookupError):
        return None
    return None


def _looks_binary(path: Path, encoding: str) -> bool:
    if encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32")):
        return False
    try:
        with path.open("rb") as handle:
            return b"\x00" in handle.read(8192)
    except OSError:
        return False


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    position = _decode_error_position(path, encoding)
    where = (f"line {position[0]} (byte {position[1]}: {position[2]!r})" if position else
             f"a byte {exc.object[exc.start:exc.start + 1]!r}")
    return DataError(
        f"cannot decode {path} as {encoding} at {where}; pass the file's encoding with --encoding (for example "
        "--encoding latin-1 or --encoding cp1252)."
    )


@contextmanager
def _reading(path: Path, encoding: str) -> Iterator[None]:
    """Turn every way reading a table can fail into one DataError naming the file and the fix."""
    import pandas as pd
    import pyarrow as pa

    try:
        yield
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None
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

    _check_readable(path, encoding)
    with _reading(path, encoding):
        if _is_parquet(path):
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, sep=_separator(path, encoding), encoding=encoding, usecols=columns, dtype=str,
                           keep_default_na=False, na_values=[""])


def table_columns(path: Path, encoding: str = "utf-8") -> list[str]:
    import pandas as pd

    _check_readable(path, encoding)
    with _reading(path, encoding):
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, sep=_separator(path, encoding), encoding=encoding, nrows=0).columns)


def iter_table_chunks(path: Path, chunk_rows: int, encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
    """Yield the file in chunks of at most ``chunk_rows`` rows, never holding it all in memory."""
    import pandas as pd

    _check_readable(path, encoding)
    with _reading(path, encoding):
        if _is_parquet(path):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        yield from pd.read_csv(path, sep=_separator(path, encoding), encoding=encoding, dtype=str, chunksize=chunk_rows,
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
            hint = ""
            if len(found) == 1 and not _is_parquet(path):
                hint = (" The header is a single column: if the file is not comma-separated, its delimiter could "
                        "not be detected (';', tab and '|' are): save it comma-separated, or tab-separated as .tsv.")
            raise DataError(
                f"column {column!r} (from {option}) not found in {path}; columns found: {found}. "
                f"Pass the right name with {option}.{hint}"
            )


def check_text_columns(path: Path, wanted: dict[str, str | None]) -> None:
    """Refuse a Parquet column of numbers, booleans or dates given as a text column (``wanted`` maps option to
    column): it is far more often the wrong column (an id, a score) than text. CSV cells are always read
    as text, so only Parquet's typed columns are checked."""
    if not _is_parquet(path):
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _reading(path, "utf-8"):
        schema = pq.ParquetFile(path).schema_arrow
    for option, column in wanted.items():
        if column is None or column not in schema.names:
            continue
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise DataError(
                f"column {column!r} (from {option}) of {path} holds {kind} values, not text. Pick the text column "
                f"with {option} (columns: {schema.names}), or store it as strings if those values really are "
                "the text."
            )


@dataclass
class LabelledData:
    """The usable rows of an input file, with their original row numbers."""

    frame: pd.DataFrame  # columns: text, label, optionally text_pair, group; index = original row number
    dropped_empty: int = 0
    labels: list[str] = field(default_factory=list)
    #: With normalize_labels: each kept spelling and the spellings merged into it.
    merged_labels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def row_ids(self) -> np.ndarray:
        return self.frame.index.to_numpy()


#: Characters of one text kept by default (generate-splits, predict-new): one huge cell must not cost
#: gigabytes (a 50 MB cell made the TF-IDF n-grams peak at 11.5 GB). 0 or None keeps every character.
DEFAULT_MAX_TEXT_CHARS = 20_000


def clip_texts(values: pd.Series, limit: int | None, what: str) -> pd.Series:
    """``values`` cut to ``limit`` characters each, with one warning that counts the texts cut."""
    if not limit:
        return values
    lengths = values.str.len()
    long = (lengths > limit).fillna(False).astype(bool)
    if long.any():
        logger.warning("%d %s longer than %d characters were cut to that length (the longest had %d); set "
                       "--max-text-chars to keep more, 0 for no limit", int(long.sum()), what, limit,
                       int(lengths.max()))
        values = values.where(~long, values.str.slice(0, limit))
    return values


def _drop_empty(frame: pd.DataFrame, required: list[str], path: Path, strict: bool) -> tuple[pd.DataFrame, int]:
    """``frame`` without the rows whose ``required`` columns are empty (refused with ``strict``), and their count."""
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
    return frame[~empty], n_empty


def load_labelled_data(
    path: Path,
    *,
    text_column: str,
    target_column: str,
    text_pair_column: str | None = None,
    group_column: str | None = None,
    encoding: str = "utf-8",
    strict: bool = False,
    normalize_labels: bool = False,
    max_text_chars: int | None = None,
    task: Task | None = None,
) -> LabelledData:
    """Load and clean a labelled table; rows with empty text or label are dropped (or refused if strict).

    Labels that differ only by case or spacing are refused, or with ``normalize_labels`` merged into their
    most frequent spelling (see ``mlops.data.labels``). A multi-label ``task`` reads label sets: the ``label``
    column then holds tuples, and ``labels`` every label seen.
    """
    import pandas as pd

    task = task or Task()
    target_columns = list(task.target_columns) if task.multi_label and task.target_columns else []
    columns = table_columns(path, encoding)
    require_columns(
        columns,
        {"--text-column": text_column, "--target-column": None if target_columns else target_column,
         "--text-pair-column": text_pair_column, "--group-column": group_column,
         **{f"--target-columns ({c})": c for c in target_columns}},
        path,
    )
    check_text_columns(path, {"--text-column": text_column, "--text-pair-column": text_pair_column})
    label_columns = target_columns or [target_column]
    wanted = [c for c in dict.fromkeys([text_column, *label_columns, text_pair_column, group_column]) if c]
    raw = read_table(path, encoding, columns=wanted)
    if raw.empty:
        raise DataError(f"input file {path} has a header but no data rows.")
    frame = pd.DataFrame(index=raw.index)
    frame["text"] = clip_texts(raw[text_column].astype("string"), max_text_chars, f"texts of {path.name}")
    label_sets = parse_label_sets(raw, path, task, target_column) if task.multi_label else None
    if label_sets is not None:  # a placeholder for the empty-row rule below: a set with no label is empty
        frame["label"] = ["set" if labels or task.allow_empty else "" for labels in label_sets]
    else:
        frame["label"] = raw[target_column]
    if text_pair_column:
        frame["text_pair"] = clip_texts(raw[text_pair_column].astype("string"), max_text_chars,
                                        f"second texts of {path.name}")
    if group_column:
        frame["group"] = raw[group_column]
    for column in frame.columns:
        frame[column] = frame[column].astype("string").str.strip() if column != "group" else frame[column].astype("string")
    frame, n_empty = _drop_empty(frame, ["text", "label"] + (["text_pair"] if text_pair_column else []), path, strict)
    if frame.empty:
        raise DataError(f"no usable rows in {path}: every row has an empty text or label.")
    if group_column:  # a row without a group value is a group of its own, not one big shared group
        missing = frame["group"].isna() | (frame["group"].astype(str).str.strip() == "")
        frame.loc[missing, "group"] = [f"\x00row{i}" for i in frame.index[missing]]
    frame = frame.astype(object)
    if label_sets is not None:
        what = "--target-columns" if task.target_columns else target_column
        frame["label"], labels, merged = reconcile_label_sets(label_sets.loc[frame.index], path, what,
                                                               normalize_labels)
        return LabelledData(frame=frame, dropped_empty=n_empty, labels=labels, merged_labels=merged)
    frame["label"], merged = reconcile_labels(frame["label"], path, target_column, normalize_labels)
    labels = sorted(frame["label"].unique().tolist())
    if len(labels) < 2:
        raise DataError(
            f"column {target_column!r} of {path} has a single class ({labels[0]!r}); a classifier needs at least two. "
            "Check --target-column."
        )
    return LabelledData(frame=frame, dropped_empty=n_empty, labels=labels, merged_labels=merged)
