"""The model-folder format: one owner for writing, reading and choosing how to run a saved model.

A model folder (written by ``train-final-model``, or an ONNX export of one) holds the model's own files,
``mlops_model.json`` (the descriptor: which ModelInterface class loads it, its labels and config) and
``manifest.json`` (what produced it). ``load_model(path, runtime=...)`` is the one way in: it picks the
torch model or its ONNX export, imports model code only from trusted modules, and checks the labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from mlops.core.choices import Runtime
from mlops.core.config import ModelConfig, config_json
from mlops.core.errors import ExperimentError, MlopsError, ModelError
from mlops.core.io import read_json, write_json
from mlops.core.model_interface import ModelInterface, check_probabilities
from mlops.core.multilabel import DEFAULT_THRESHOLD, Task
from mlops.core.plugins import resolve_model_class
from mlops.core.text_dataset import TextDataset

logger = logging.getLogger(__name__)

MODEL_FILE = "mlops_model.json"
MANIFEST_FILE = "manifest.json"
MODEL_FORMAT_VERSION = 1
EXPORT_DIR = "onnx"
EXPORT_KIND = "onnx_export"


def write_model_descriptor(directory: Path, config_name: str, config: ModelConfig, labels: list[str], *,
                           text_pair: bool = False, task: Task | None = None,
                           thresholds: list[float] | None = None) -> None:
    """The file that makes a saved model folder loadable: which class, which labels (multi-label: the task and
    each label's decision threshold, tuned on the final model's val rows)."""
    multi = task is not None and task.multi_label
    write_json(Path(directory) / MODEL_FILE, {
        **({"task": {**task.to_dict(), "thresholds": list(thresholds or [DEFAULT_THRESHOLD] * len(labels))}}
           if multi else {}),
        "format_version": MODEL_FORMAT_VERSION,
        "module_path": config.module_path,
        "class_name": config.class_name,
        "labels": list(labels),
        "text_pair": text_pair,
        "config_name": config_name,
        # Loading needs neither a tune's per-fold values nor its record; left out, older versions read the folder.
        "model_config": config_json(config, {"fold_training_arguments", "tuning"}),
    })


def is_model_folder(directory: Path) -> bool:
    return (Path(directory) / MODEL_FILE).is_file()


def save_model_folder(directory: Path, model: ModelInterface, config_name: str, config: ModelConfig,
                      labels: list[str], *, text_pair: bool = False, task: Task | None = None,
                      thresholds: list[float] | None = None) -> float:
    """The model's own files and its descriptor in ``directory`` (a scratch folder the caller renames into
    place once ``write_manifest`` has completed it); the seconds it took."""
    started = time.perf_counter()
    model.save(directory)
    write_model_descriptor(directory, config_name, config, labels, text_pair=text_pair, task=task,
                           thresholds=thresholds)
    return time.perf_counter() - started


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """What produced the model folder ``directory`` (data fingerprint, config, seed, metrics, environment)."""
    write_json(Path(directory) / MANIFEST_FILE, manifest)


def read_manifest(directory: Path) -> dict[str, Any]:
    """A folder's manifest (what produced it); empty if it has none."""
    path = Path(directory) / MANIFEST_FILE
    return read_json(path) if path.is_file() else {}


def training_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the trained model: the folder's own, or for an export its source model's."""
    manifest = read_manifest(directory)
    if manifest.get("kind") == EXPORT_KIND and (Path(directory).parent / MANIFEST_FILE).is_file():
        return read_manifest(Path(directory).parent)
    return manifest


@dataclass
class LoadedModel:
    """A model loaded from a folder, with the folder's descriptor."""

    model: ModelInterface
    info: dict[str, Any]
    directory: Path

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def needs_text_pair(self) -> bool:
        return bool(self.info.get("text_pair"))

    @property
    def task(self) -> Task:
        return Task.from_dict(self.info.get("task"))

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label: each label's decision threshold; None for a single-label model."""
        task = self.info.get("task") or {}
        return [float(t) for t in task["thresholds"]] if task.get("thresholds") else None

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        try:
            proba = self.model.predict_proba(data)
        except MlopsError:
            raise
        except Exception as exc:
            raise ModelError(f"prediction with {self.directory} failed: {type(exc).__name__}: {exc}") from exc
        return check_probabilities(proba, len(data), self.labels, type(self.model).__name__)


def read_descriptor(path: Path) -> tuple[dict[str, Any], ModelConfig, list[str]]:
    """The descriptor of model folder ``path``, its config and labels; ExperimentError if it is not one."""
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ExperimentError(f"model folder {path} {what}; pass a folder written by `cli train-final-model`.")
    if not os.access(path, os.R_OK | os.X_OK):
        raise _unreadable(path, path)
    if not (path / MODEL_FILE).is_file():
        raise ExperimentError(
            f"{path} is not a model folder: it has no {MODEL_FILE}. Pass a folder written by `cli train-final-model` "
            "(by default artifacts/experiments/<id>/runs/<config>/final_model)."
        )
    info = read_json(path / MODEL_FILE)
    if not isinstance(info, dict) or info.get("format_version") != MODEL_FORMAT_VERSION:
        found = info.get("format_version") if isinstance(info, dict) else type(info).__name__
        raise ExperimentError(f"{path / MODEL_FILE} has format_version {found!r}; this version of the tool "
                              f"reads {MODEL_FORMAT_VERSION}. Retrain the model with `cli train-final-model`.")
    try:
        config = ModelConfig.model_validate(info["model_config"])
        labels = [str(label) for label in info["labels"]]
    except (KeyError, TypeError, ValidationError) as exc:
        raise ExperimentError(f"{path / MODEL_FILE} is not a valid model descriptor ({type(exc).__name__}: {exc}); "
                              "retrain the model with `cli train-final-model`.") from None
    return info, config, labels


def load_model_folder(path: Path, *, device: str | None = None, allow_external: bool = False) -> LoadedModel:
    """Load exactly the folder ``path`` (see ``load_model`` to let the runtime choose an export)."""
    path = Path(path)
    info, config, labels = read_descriptor(path)
    if config.training_arguments.get("trust_remote_code") and not allow_external:
        raise ExperimentError(
            f"{path} asks for trust_remote_code, which would run code shipped with the model; pass "
            "--allow-external-models only if you trust where this folder came from."
        )
    model_class = resolve_model_class(config, allow_external=allow_external, source=str(path / MODEL_FILE))
    _check_readable(path)
    try:
        model = model_class.load(path, config, device=device)
    except MlopsError:
        raise
    except PermissionError as exc:
        raise _unreadable(Path(exc.filename or path), path) from None
    except Exception as exc:
        raise ModelError(f"cannot load the model in {path}: {type(exc).__name__}: {exc}") from exc
    if list(model.labels) != labels:
        raise ModelError(f"{path}: the model's labels {model.labels} differ from {MODEL_FILE}'s {labels}.")
    return LoadedModel(model=model, info=info, directory=path)


def _unreadable(item: Path, folder: Path) -> ExperimentError:
    try:
        info = item.stat()
        owner = f" (mode {info.st_mode & 0o777:04o}, owner uid {info.st_uid})"
    except OSError:
        owner = ""
    return ExperimentError(
        f"{item} is not readable for this user{owner}, so the model in {folder} cannot be loaded. Ask its owner to "
        f"run `chmod -R a+rX {folder}` (folders written by this version get the modes the umask allows)."
    )


def _check_readable(folder: Path) -> None:
    """Name the first file of a model folder this user cannot read (a permission problem, not a missing file);
    the ONNX export inside it is checked when it is the folder loaded."""
    for item in [folder, *(p for p in folder.rglob("*") if EXPORT_DIR not in p.relative_to(folder).parts)]:
        if not os.access(item, os.R_OK | (os.X_OK if item.is_dir() else 0)):
            raise _unreadable(item, folder)


def load_model(path: Path, *, runtime: Runtime = "auto", device: str | None = None,
               allow_external: bool = False) -> LoadedModel:
    """Load the model folder ``path``, or its ONNX export where ``runtime`` picks it (see ``runtime_folder``)."""
    folder = runtime_folder(Path(path), runtime, device)
    return load_model_folder(folder, device=device, allow_external=allow_external)


# --- the ONNX export inside a model folder ---------------------------------------------------------------------

def manifest_kind(directory: Path) -> str | None:
    """The ``kind`` recorded in a folder's manifest (``onnx_export`` for an export), None if there is none."""
    try:
        manifest = read_json(Path(directory) / MANIFEST_FILE)
    except ExperimentError:
        return None
    return manifest.get("kind") if isinstance(manifest, dict) else None


def source_fingerprint(model_dir: Path, *, legacy: bool = False) -> str:
    """What identifies the saved model an export was made from: its manifest (less the ``export`` record
    that train-final-model adds after exporting) and descriptor, and the names and sizes of its files (a
    retrained or hand-edited folder gets a new fingerprint). ``legacy``: the raw-bytes digest of earlier
    versions, still accepted for their exports."""
    digest = hashlib.sha256()
    found = False
    for name in (MANIFEST_FILE, MODEL_FILE):
        if (model_dir / name).is_file():
            raw = (model_dir / name).read_bytes()
            if name == MANIFEST_FILE and not legacy:
                try:
                    manifest = json.loads(raw)
                except ValueError:
                    manifest = None  # a damaged manifest: its bytes are its identity
                if isinstance(manifest, dict):
                    manifest.pop("export", None)
                    raw = json.dumps(manifest, sort_keys=True).encode()
            digest.update(raw)
            found = True
    if not found:
        raise ExperimentError(f"{model_dir} has neither {MANIFEST_FILE} nor {MODEL_FILE}.")
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        if path.name == MANIFEST_FILE and not legacy:
            continue  # its size changes with the export record; its content is in the digest above
        digest.update(f"{path.name}:{path.stat().st_size};".encode())
    return digest.hexdigest()


def export_for(model_dir: Path) -> Path | None:
    """The export inside ``model_dir`` if there is one made from this very model, else None."""
    directory = Path(model_dir) / EXPORT_DIR
    if not (directory / MODEL_FILE).is_file() or not (directory / MANIFEST_FILE).is_file():
        return None
    try:
        recorded = read_json(directory / MANIFEST_FILE).get("source_fingerprint")
    except (ExperimentError, AttributeError):
        return None
    if recorded not in (source_fingerprint(model_dir), source_fingerprint(model_dir, legacy=True)):
        logger.warning("%s was exported from a different model than %s; ignoring it (re-run export-model)",
                       directory, model_dir)
        return None
    return directory


def write_export_files(directory: Path, source_dir: Path, config: ModelConfig, source: LoadedModel,
                       manifest: dict[str, Any]) -> None:
    """The descriptor and manifest that make ``directory`` (a scratch folder holding the exported files) an
    export of the model folder ``source_dir``, recognised by ``export_for`` while that model is unchanged."""
    write_model_descriptor(directory, f"{source.info.get('config_name', 'model')}-onnx", config, source.labels,
                           text_pair=source.needs_text_pair, task=source.task, thresholds=source.thresholds)
    write_manifest(directory, {"kind": EXPORT_KIND, "source_model_dir": str(Path(source_dir).resolve()),
                               "source_fingerprint": source_fingerprint(Path(source_dir)), **manifest})


def record_export(model_dir: Path, record: dict[str, Any]) -> None:
    """Note in the model's manifest the export train-final-model made (or why it failed); the source
    fingerprint ignores this key, so the export stays recognised."""
    manifest = read_json(Path(model_dir) / MANIFEST_FILE)
    manifest["export"] = record
    write_json(Path(model_dir) / MANIFEST_FILE, manifest)


def _gpu_present() -> bool:
    """A cheap look for an NVIDIA GPU without importing torch (auto then prefers the torch model on it)."""
    return Path("/dev/nvidiactl").exists()


def runtime_folder(model_dir: Path, runtime: Runtime, device: str | None) -> Path:
    """The folder to load for ``runtime``: ``model_dir`` itself or its ONNX export.

    auto: the export when there is one made from this model and the CPU is used; torch: the model
    itself; onnx: the export, or an error saying how to make one.
    """
    model_dir = Path(model_dir)
    is_export = (model_dir / MANIFEST_FILE).is_file() and manifest_kind(model_dir) == EXPORT_KIND
    if runtime == "torch" or is_export:
        if is_export and runtime == "torch":
            raise ExperimentError(f"{model_dir} is an ONNX export; pass the model folder it was exported from "
                                  "to use --runtime torch.")
        return model_dir
    export = export_for(model_dir) if model_dir.is_dir() else None
    if runtime == "onnx":
        if export is None:
            raise ExperimentError(f"{model_dir} has no ONNX export made from it; run `cli export-model --model-path "
                                  f"{model_dir}` first, or use --runtime torch.")
        if device not in (None, "cpu"):
            raise ExperimentError(f"ONNX exports run on the CPU; drop --device {device} or use --runtime torch.")
        return export
    if export is not None and device in (None, "cpu") and not (device is None and _gpu_present()):
        logger.info("using the ONNX export in %s (--runtime torch to use the torch model)", export)
        return export
    return model_dir
