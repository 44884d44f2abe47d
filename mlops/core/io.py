"""Small file helpers every layer shares: atomic writes, JSON, sha256 of a file, plain names, scratch files.

Nothing here imports more than the standard library and numpy, so any module may use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from mlops.core.errors import ExperimentError

logger = logging.getLogger(__name__)

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


def file_problem(exc: OSError, path: Path, doing: str, *, use_filename: bool = True) -> ExperimentError:
    """An OSError (permissions, a full disk, a file where a folder should be) as one clear error about
    ``path`` (or the file the error names, with ``use_filename``)."""
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, PermissionError):
        fix = "make it writable for this user, or choose another location"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)):
        fix = "a file stands where a folder is needed: move it away, or choose another location"
    else:
        fix = "check the path and the free space, or choose another location"
    where = (exc.filename if use_filename else None) or path
    return ExperimentError(f"cannot {doing} {where}: {reason}; {fix}.")


def ensure_directory(path: Path) -> Path:
    """``path`` as an existing folder (created with its parents if need be), or one clear ExperimentError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise file_problem(exc, path, "create the folder") from None
    return path


def check_writable_directory(directory: Path, what: str) -> None:
    """Refuse early (before slow work) when files cannot be created in ``directory``, or in the nearest folder
    above it that exists (it would be created)."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ExperimentError(f"{what}: {existing} is a file, not a folder; choose another location.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExperimentError(f"{what}: the folder {existing} is not writable for this user; make it writable or "
                              "choose another location.")


# --- scratch files and folders -------------------------------------------------------------------------------
#: Scratch names carry the pid of the process that made them, so a later run can tell a dead run's leftovers
#: (``kill -9``, a power cut) from a live run's work: ``.<name>.<kind>-<pid>-<hex>`` and ``.work-<pid>-<hex>``.
_SCRATCH = re.compile(r"^\.(?:work|(?P<target>.+)\.(?:partial|tmp|old))-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")
#: A scratch entry without a pid (made by an earlier version) counts as stale after this long.
STALE_SCRATCH_AGE_S = 3600


def scratch_name(path: Path, kind: str) -> Path:
    """A hidden sibling of ``path`` to write into before renaming it over ``path``."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def work_dir_name(parent: Path) -> Path:
    return Path(parent) / f".work-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (ours counts; another user's too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_scratch(directory: Path, *, target: str | None = None) -> list[Path]:
    """Delete the scratch entries in ``directory`` that no live process owns: their recorded pid is not running
    here, or (no pid recorded) they are older than an hour. ``target``: only the scratch of that name."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:  # missing or unreadable: nothing to clean
        return removed
    now = time.time()
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if match is None or (target is not None and match.group("target") != target):
            continue
        pid = match.group("pid")
        try:
            stale = not pid_alive(int(pid)) if pid else now - entry.lstat().st_mtime > STALE_SCRATCH_AGE_S
            if not stale:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            logger.debug("could not remove stale scratch %s: %s", entry, exc)
            continue
        removed.append(entry)
    if removed:
        logger.info("removed %d stale scratch entries left by interrupted runs in %s", len(removed), directory)
    return removed


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, so setting it is racy)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(root: Path) -> None:
    """Give ``root`` and everything in it the modes the umask allows (folders 0777, files 0666, executables
    0777, each less the umask): some writers (safetensors, temporary-file helpers) create files 0600, which
    would stop other users from loading a shared model."""
    mask = _umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            full = 0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666
            os.chmod(path, full & ~mask)
        except OSError as exc:
            logger.debug("could not set the mode of %s: %s", path, exc)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    tmp = scratch_name(path, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise file_problem(exc, path, "write") from None
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
    except PermissionError:
        raise ExperimentError(f"{path} is not readable for this user (permission denied); ask its owner to make it "
                              "readable (chmod a+r), or copy it somewhere you can read.") from None
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path} is corrupt (line {exc.lineno}, column {exc.colno}); regenerate it.") from None


@contextmanager
def staged_directory(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a scratch folder next to ``final``; on success it atomically becomes ``final``.

    On failure the scratch folder is removed, so no half-written artifact is left behind. With
    ``replace`` an existing ``final`` is swapped out only after the new content is complete. The finished
    folder gets the modes the umask allows (``honour_umask``); scratch of ``final`` that a dead run left
    is removed first (``remove_stale_scratch``).
    """
    final = Path(final)
    ensure_directory(final.parent)
    remove_stale_scratch(final.parent, target=final.name)
    scratch = scratch_name(final, "partial")
    try:
        scratch.mkdir()
    except OSError as exc:
        raise file_problem(exc, final.parent, "write in the folder", use_filename=False) from None
    try:
        yield scratch
        honour_umask(scratch)
        if final.exists() and not replace:
            raise ExperimentError(f"{final} appeared while writing; not overwriting it.")
        try:
            if final.exists():
                trash = scratch_name(final, "old")
                os.replace(final, trash)
                os.replace(scratch, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(scratch, final)
        except OSError as exc:
            raise file_problem(exc, final, "replace", use_filename=False) from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


# --- one writer at a time ---------------------------------------------------------------------------------------
#: Locks this process holds (path -> depth), so a command that calls another (quickstart) does not wait on itself.
_HELD: dict[str, int] = {}


@contextmanager
def file_lock(path: Path, holder: str, *, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if need be), which then names ``holder`` (pid and
    command) to anyone refused. Re-entrant within a process; the kernel releases it when the process ends,
    even on ``kill -9``, so a lock is never left stale. Without ``wait`` a held lock is an ExperimentError
    naming the holder; with it, this waits."""
    import fcntl

    key = str(Path(path).absolute())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise file_problem(exc, Path(path), f"lock {what} for writing at", use_filename=False) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _lock_holder(path)
            if not wait:
                os.close(fd)
                raise ExperimentError(f"{what} is in use by {current}; wait for it to finish, or rerun with "
                                      "`cli --wait <command> ...` to wait for it.") from None
            logger.warning("%s is in use by %s; waiting for it to finish", what, current)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the file may have been replaced while we waited (generate-splits --force swaps the folder)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode("utf-8"))
        _HELD[key] = 1
        yield
    finally:
        _HELD.pop(key, None)
        os.close(fd)


def _lock_holder(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process"
