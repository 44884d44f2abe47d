"""Small file helpers every layer shares: atomic writes, JSON, sha256 of a file, plain names.

Nothing here imports more than the standard library and numpy, so any module may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from mlops.errors import ExperimentError

PLAIN_NAME_LIMIT = 128
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_plain_name(value: str, what: str) -> str:
    """``value`` if it is a safe file name (letters, digits, '.', '_', '-'); else an ExperimentError."""
    if not _PLAIN_NAME.match(value or "") or ".." in value or len(value) > PLAIN_NAME_LIMIT:
        raise ExperimentError(
            f"{what} {value!r} is not a plain name: use at most {PLAIN_NAME_LIMIT} letters, digits, '.', '_' or "
            "'-', starting with a letter or digit, without path separators or '..'."
        )
    return value


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _scratch_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = _scratch_name(path, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any, *, ensure_ascii: bool = True) -> None:
    """Write JSON atomically (see ``write_text_atomic``); numpy values, paths and enums are converted."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=ensure_ascii, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing.") from None
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path} is corrupt (line {exc.lineno}, column {exc.colno}); regenerate it.") from None


@contextmanager
def staged_directory(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a scratch folder next to ``final``; on success it atomically becomes ``final``.

    On failure the scratch folder is removed, so no half-written artifact is left behind. With
    ``replace`` an existing ``final`` is swapped out only after the new content is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = _scratch_name(final, "partial")
    scratch.mkdir()
    try:
        yield scratch
        if final.exists():
            if not replace:
                raise ExperimentError(f"{final} appeared while writing; not overwriting it.")
            trash = _scratch_name(final, "old")
            os.replace(final, trash)
            os.replace(scratch, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
