"""The encoder's ONNX Runtime export: fp32, or int8 checked against the fp32 model (see ``graph``).

The export is loaded by ``models.onnx_encoder.model.OnnxEncoderClassifier``; the facts returned here go
into the export's manifest. A calibrated model's temperature goes into ``export.json`` and the runtime divides
the logits by it before the softmax, so the export's probabilities (and its check against the torch model's
calibrated fp32 probabilities) are the calibrated ones.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.text_dataset import TextDataset
from models.hf_common.training import available_cores, quiet_transformers


class ExportableEncoder(Protocol):
    """What the export needs of a trained ``models.hf_encoder.model.HFEncoderClassifier``."""

    config: ModelConfig
    labels: list[str]
    tokenizer: Any
    device: str
    max_length: int
    uses_text_pairs: bool
    temperature: float
    head_tokens: int | None  # truncation head_tail: tokens kept from the start; None: the head only
    windows: Any  # truncation windows: a models.hf_common.windows.Windows; None: one cut per text
    multi_label: bool  # a sigmoid per label

    def fitted_module(self) -> Any: ...

    def encode(self, texts: list, pairs: list | None, idx: np.ndarray) -> dict: ...

    def predict_fp32(self, data: TextDataset) -> np.ndarray: ...


def _check_exportable(classifier: ExportableEncoder) -> None:
    tokenizer = classifier.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("ONNX export needs a fast (tokenizers) tokenizer; this model's tokenizer is a slow one.")
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ModelError("ONNX export pads on the right; this model's tokenizer pads on the left.")
    if classifier.device != "cpu":
        raise ModelError("load the model on the CPU (--device cpu) to export it.")


def _export_meta(classifier: ExportableEncoder, outcome, truncation_side: str) -> dict[str, Any]:
    from models.onnx_encoder import graph
    from models.onnx_encoder.model import EXPORT_FORMAT

    return {
        "format": EXPORT_FORMAT,
        "onnx_file": outcome.onnx_file.name,
        "precision": outcome.precision,
        "labels": classifier.labels,
        "max_length": classifier.max_length,
        "uses_text_pairs": classifier.uses_text_pairs,
        "pad_token_id": classifier.tokenizer.pad_token_id,
        "truncation_side": truncation_side,
        "head_tokens": classifier.head_tokens,
        "windows": _windows_meta(classifier),
        "input_names": outcome.input_names,
        "rescore": ({"onnx_file": graph.RESCORE_FILE, "margin_below": outcome.rescore_margin_below}
                    if outcome.rescore_margin_below else None),
        "opset": graph.OPSET,
        "temperature": classifier.temperature,
        "multi_label": classifier.multi_label,
    }


def _windows_meta(classifier: ExportableEncoder) -> dict[str, int] | None:
    windows = classifier.windows
    return None if windows is None else {"overlap": windows.overlap, "max_windows": windows.max_windows}


def export_encoder_onnx(classifier: ExportableEncoder, directory: Path, *, precision: str,
                        calibration: TextDataset, check: TextDataset, min_agreement: float) -> dict[str, Any]:
    """Write the export of ``classifier`` into ``directory`` and return its facts (see ModelInterface)."""
    from models.onnx_encoder import graph
    from models.onnx_encoder.model import EXPORT_FILE, TOKENIZER_FILE, OnnxEncoderClassifier, open_session

    _check_exportable(classifier)
    if classifier.multi_label and precision != "fp32":
        raise ModelError("int8 exports are checked by how often the top label changes, which does not describe label "
                         "sets; export a multi-label model with --precision fp32.")
    model = classifier.fitted_module()
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter: export the merged weights
        model = copy.deepcopy(model).merge_and_unload()
    model.eval()
    directory = Path(directory)
    tokenizer = classifier.tokenizer
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(directory / TOKENIZER_FILE))
    cal_texts = list(calibration.texts)
    cal_pairs = None if calibration.text_pairs is None else list(calibration.text_pairs)

    def encode(rows):
        return classifier.encode(cal_texts, cal_pairs, np.asarray(rows))

    truncation_side = getattr(tokenizer, "truncation_side", "right")
    reference = classifier.predict_fp32(check)
    runtime_config = ModelConfig(module_path="models.onnx_encoder.model", class_name="OnnxEncoderClassifier",
                                 model_name=classifier.config.model_name,
                                 description=f"ONNX Runtime export of {classifier.config.model_name}")

    def predict_onnx(path: Path) -> np.ndarray:
        from tokenizers import Tokenizer

        runtime = OnnxEncoderClassifier.from_parts(
            runtime_config, open_session(path, available_cores()),
            Tokenizer.from_file(str(directory / TOKENIZER_FILE)), labels=classifier.labels,
            max_length=classifier.max_length, uses_text_pairs=classifier.uses_text_pairs,
            pad_token_id=tokenizer.pad_token_id, truncation_side=truncation_side, temperature=classifier.temperature,
            head_tokens=classifier.head_tokens, multi_label=classifier.multi_label,
            windows=_windows_meta(classifier))
        return runtime.predict_proba(check)

    with quiet_transformers():
        outcome = graph.export_encoder(
            model, encode, directory=directory, precision=precision, calibration_rows=len(cal_texts),
            reference_proba=reference, predict_onnx=predict_onnx, min_agreement=min_agreement)
    meta = _export_meta(classifier, outcome, truncation_side)
    (directory / EXPORT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return {
        "module_path": runtime_config.module_path,
        "class_name": runtime_config.class_name,
        "precision": outcome.precision,
        "requested_precision": precision,
        "check_against_fp32_torch": outcome.check,
        "attempts": outcome.attempts,
        "rescore_margin_below": outcome.rescore_margin_below,
        "smoothing_alpha": graph.SMOOTHING_ALPHA if outcome.precision == "int8" else None,
        "calibration_rows": len(cal_texts),
        "temperature": classifier.temperature,
        "seconds": round(outcome.seconds, 2),
    }
