"""`export-model`: an ONNX Runtime copy of a saved model, checked against it on real rows.

The export goes to ``<model folder>/onnx`` by default, where ``predict-new --runtime auto`` picks it up
on the CPU. It is written into a scratch folder and renamed into place only when complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.choices import ExportPrecision
from mlops.core.config import ModelConfig
from mlops.core.errors import DataError, ExperimentError, MlopsError, ModelError
from mlops.core.io import file_sha256, staged_directory
from mlops.core.model_folder import (EXPORT_DIR, EXPORT_KIND, MANIFEST_FILE, load_model_folder, manifest_kind,
                                     read_manifest, record_export, write_export_files)
from mlops.core.provenance import environment_manifest
from mlops.core.text_dataset import TextDataset

logger = logging.getLogger(__name__)

CALIBRATION_ROWS = 512
MIN_CHECK_ROWS = 200
#: Check rows of the export train-final-model makes by itself: a quick check (`cli export-model` re-checks on more).
AFTER_TRAINING_CHECK_ROWS = 1000


@dataclass
class ExportResult:
    directory: Path
    precision: str
    check: dict[str, Any]
    seconds: float


def _sample_rows(data_file: Path, text_column: str, text_pair_column: str | None, encoding: str, rows: int,
                 seed: int) -> tuple[TextDataset, TextDataset]:
    """Disjoint calibration and check rows drawn at random from ``data_file`` (non-empty, distinct texts)."""
    from mlops.data.tables import read_table, require_columns, table_columns

    columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    require_columns(table_columns(data_file, encoding),
                    {"--text-column": text_column, "--text-pair-column": text_pair_column}, data_file)
    frame = read_table(data_file, encoding, columns=columns).fillna("").astype(str)  # only the text columns
    frame = frame[frame[text_column].str.strip() != ""].drop_duplicates()
    n_calibration = min(CALIBRATION_ROWS, len(frame) // 3)
    if len(frame) - n_calibration < MIN_CHECK_ROWS:
        raise DataError(f"{data_file} has {len(frame)} distinct non-empty texts; the export needs at least "
                        f"{MIN_CHECK_ROWS + MIN_CHECK_ROWS // 2} to calibrate and check against. Pass a larger "
                        "--data-file (the training data is a good choice).")
    order = np.random.default_rng(seed).permutation(len(frame))
    picked = frame.iloc[order[: n_calibration + rows]]
    if len(picked) - n_calibration < rows:
        logger.warning("%s has %d usable rows after %d calibration rows; checking on those instead of --rows %d",
                       data_file, len(picked) - n_calibration, n_calibration, rows)

    def dataset(part):
        return TextDataset(texts=part[text_column].tolist(),
                           text_pairs=part[text_pair_column].tolist() if text_pair_column else None)

    return dataset(picked.iloc[:n_calibration]), dataset(picked.iloc[n_calibration:])


def _checked_output_dir(model_dir: Path, output_dir: Path | None, *, rows: int, min_agreement: float,
                        force: bool) -> Path:
    if not 0.0 < min_agreement <= 1.0:
        raise ExperimentError(f"--min-agreement must be in (0, 1]; found {min_agreement}.")
    if rows < MIN_CHECK_ROWS:
        raise ExperimentError(f"--rows must be at least {MIN_CHECK_ROWS}; found {rows}.")
    output_dir = Path(output_dir) if output_dir else model_dir / EXPORT_DIR
    if output_dir.exists() and not force:
        raise ExperimentError(f"{output_dir} already exists; pass --force to replace it or choose --output-dir.")
    if output_dir.resolve() in (model_dir.resolve(), *model_dir.resolve().parents):
        raise ExperimentError(f"--output-dir {output_dir} would contain the model folder it is exported from; "
                              "choose another folder.")
    if output_dir.exists() and manifest_kind(output_dir) != EXPORT_KIND:
        raise ExperimentError(f"{output_dir} exists and is not an ONNX export; --force replaces only an earlier "
                              "export. Choose another --output-dir.")
    return output_dir


def _training_file(model_dir: Path, manifest: dict[str, Any]) -> Path:
    """The file the model was trained on, as its manifest records it (the default rows to check on)."""
    recorded = manifest.get("input_file")
    if not recorded or not Path(recorded).is_file():
        raise ExperimentError(
            f"pass --data-file: rows like the ones the model will label, to calibrate and check the export "
            f"on ({model_dir / MANIFEST_FILE} names no training file that exists here: {recorded!r})."
        )
    logger.warning("checking the export on rows of the training file %s: the model is surer of rows it was "
                   "trained on, so label agreement there can be higher than on new data; pass --data-file "
                   "with unseen rows for a stricter check", recorded)
    return Path(recorded)


def export_model(
    model_dir: Path,
    *,
    output_dir: Path | None = None,
    precision: ExportPrecision = "auto",
    data_file: Path | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    encoding: str | None = None,
    rows: int = 4000,
    min_agreement: float = 0.995,
    force: bool = False,
    allow_external: bool = False,
    seed: int = 0,
) -> ExportResult:
    model_dir = Path(model_dir)
    output_dir = _checked_output_dir(model_dir, output_dir, rows=rows, min_agreement=min_agreement, force=force)
    loaded = load_model_folder(model_dir, device="cpu", allow_external=allow_external)
    manifest = read_manifest(model_dir)
    columns = manifest.get("columns") or {}
    data_file = Path(data_file) if data_file is not None else _training_file(model_dir, manifest)
    text_column = text_column or columns.get("text") or "text"
    if text_pair_column is None and loaded.needs_text_pair:
        text_pair_column = columns.get("text_pair")
        if not text_pair_column:
            raise ExperimentError(f"{model_dir} was trained on sentence pairs; pass --text-pair-column.")
    if text_pair_column and not loaded.needs_text_pair:
        raise ExperimentError(f"{model_dir} was trained on single texts; drop --text-pair-column.")
    calibration, check = _sample_rows(data_file, text_column, text_pair_column,
                                      encoding or manifest.get("encoding") or "utf-8", rows, seed)
    with staged_directory(output_dir, replace=force) as scratch:
        try:
            facts = loaded.model.export_onnx(scratch, precision=precision, calibration=calibration, check=check,
                                             min_agreement=min_agreement)
        except MlopsError:
            raise
        except Exception as exc:
            raise ModelError(f"exporting {model_dir} failed: {type(exc).__name__}: {exc}") from exc
        config = ModelConfig(module_path=facts.pop("module_path"), class_name=facts.pop("class_name"),
                             model_name=loaded.info["model_config"].get("model_name"),
                             description=f"ONNX Runtime export ({facts['precision']}) of {model_dir}")
        write_export_files(scratch, model_dir, config, loaded, {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_file": str(Path(data_file).resolve()),
            "data_sha256": file_sha256(Path(data_file)),
            "columns": {"text": text_column, "text_pair": text_pair_column},
            "requested_check_rows": rows,
            "check_rows_used": len(check),
            "seed": seed,
            "min_agreement": min_agreement,
            **facts,
            "environment": environment_manifest(),
        })
    logger.info("ONNX export (%s) written to %s", facts["precision"], output_dir)
    return ExportResult(output_dir, facts["precision"], facts["check_against_fp32_torch"], facts["seconds"])


def supports_export(model_class: type) -> bool:
    """Whether ``model_class`` implements ``export_onnx`` (the base class only refuses)."""
    from mlops.core.model_interface import ModelInterface

    return getattr(model_class, "export_onnx", None) is not ModelInterface.export_onnx


def export_after_training(model_dir: Path, data_file: Path, *, allow_external: bool = False) -> dict[str, Any]:
    """The export train-final-model writes by itself: checked on rows of the training file; its outcome (or
    why it failed, which does not fail the training) is recorded under ``export`` in the model's manifest."""
    logger.info("exporting %s to ONNX Runtime for fast CPU prediction (checked on rows of its training file; "
                "--no-export skips this, `cli export-model --data-file` re-checks on new rows)", model_dir)
    try:
        result = export_model(model_dir, data_file=data_file, rows=AFTER_TRAINING_CHECK_ROWS,
                              allow_external=allow_external, force=True)
        record = {"directory": EXPORT_DIR, "precision": result.precision, "check": result.check,
                  "seconds": round(result.seconds, 2)}
    except MlopsError as exc:
        logger.warning("no ONNX export for %s: %s (predict-new and serve use the torch model)", model_dir, exc)
        record = {"directory": None, "error": str(exc)}
    record_export(model_dir, record)
    return record
