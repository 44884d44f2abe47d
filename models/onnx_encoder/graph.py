"""ONNX Runtime export of a fine-tuned encoder: exact fp32, or int8 checked against the fp32 model.

int8 recipe (chosen by measurement on MiniLM-L6, see docs/benchmarks.md): per-channel int8 weights and dynamic
per-tensor uint8 activations for every weight matmul of the encoder (ONNX Runtime's MatMulInteger), with
two guards against the activation outliers that make BERT-style models hard to quantize:

* SmoothQuant-style rescaling: each Linear's input is divided per channel by ``s = amax^a / wmax^(1-a)``
  (a = 0.8, amax measured on calibration rows) and its weight columns multiplied by ``s``, which moves the
  outliers into the per-channel-quantized weights;
* rows whose int8 top-two probability margin is small are re-scored with the exact fp32 graph (a
  cascade): the margin is the smallest that leaves a quarter of the allowed disagreement (99.875% for a
  99.5% target) on one half of the check rows; the agreement reported and required is measured on the
  other half.

Attention score matmuls, embeddings, the pooler and the classifier head stay fp32. Per-tensor int8 alone
flips labels of rows near the decision boundary whatever the smoothing, which is why the re-score exists.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops.core.errors import ModelError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 17
SMOOTHING_ALPHA = 0.8
RESCORE_FILE = "model.fp32.onnx"
#: Rows whose int8 top-two margin is below the first of these that passes get re-scored in fp32.
RESCORE_MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass
class ExportOutcome:
    precision: str  # "fp32" or "int8"
    onnx_file: Path
    input_names: list[str]
    check: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    rescore_margin_below: float | None = None
    seconds: float = 0.0


def _encoder_linears(model) -> dict[str, Any]:
    import torch

    head = ("classifier", "pooler", "pre_classifier", "score")
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(part in head for part in name.split("."))}


def _smoothed_linear(linear, scale, inv_scale):
    """``linear`` computing ``(x * inv_scale) @ (W * scale).T + b``: the same output, easier to quantize."""
    import torch

    class SmoothedLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("inv_scale", inv_scale)
            self.inner = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
            with torch.no_grad():
                self.inner.weight.copy_(linear.weight * scale[None, :])
                if linear.bias is not None:
                    self.inner.bias.copy_(linear.bias)

        def forward(self, x):
            return self.inner(x * self.inv_scale)

    return SmoothedLinear()


def _replace_module(root, name: str, new) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def smooth_linears(model, encode: Callable[[list[int]], dict], n_rows: int, batch_size: int = 64,
                   alpha: float = SMOOTHING_ALPHA) -> None:
    """SmoothQuant rescaling of the encoder Linears in place, from input maxima measured on ``n_rows`` rows."""
    import torch

    linears = _encoder_linears(model)
    if not linears:
        raise ModelError("the model has no encoder Linear layers to quantize; export it with --precision fp32.")
    amax: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach()
            m = x.float().abs().reshape(-1, x.shape[-1]).amax(0)
            amax[name] = torch.maximum(amax[name], m) if name in amax else m
        return hook

    handles = [linear.register_forward_hook(record(name)) for name, linear in linears.items()]
    try:
        with torch.inference_mode():
            for start in range(0, n_rows, batch_size):
                model(**encode(list(range(start, min(start + batch_size, n_rows)))))
    finally:
        for handle in handles:
            handle.remove()
    for name, linear in linears.items():  # a scale per Linear: sharing one across query/key/value flips more labels
        wmax = linear.weight.detach().abs().amax(0).clamp(min=1e-5)
        scale = (amax[name].clamp(min=1e-5) ** alpha / wmax ** (1 - alpha)).clamp(min=1e-5)
        _replace_module(model, name, _smoothed_linear(linear, scale, (1.0 / scale).to(torch.float32)))


def _with_eager_attention(model):
    """A copy of ``model`` computing attention with plain ops where it can switch: its int8 graph runs
    faster than the SDPA export's, which adds masking ops (docs/benchmarks.md)."""
    import copy

    model = copy.deepcopy(model)
    try:
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError, NotImplementedError) as exc:  # older transformers or no eager path
        logger.debug("keeping the model's attention implementation: %s", exc)
    return model


def export_graph(model, sample: dict, path: Path) -> list[str]:
    """Trace ``model`` to ONNX with dynamic batch and sequence axes; returns the graph's input names."""
    import warnings

    import torch

    # Positional inputs in the order forward() declares them (the exporter names inputs by position).
    parameters = list(inspect.signature(model.forward).parameters)
    unknown = [name for name in sample if name not in parameters]
    if unknown:
        raise ModelError(f"the model's forward() takes no {unknown}; it cannot be exported.")
    names = sorted(sample, key=parameters.index)
    if names != parameters[:len(names)]:
        raise ModelError(f"the model's forward() does not take {names} as its first arguments; it cannot be exported.")
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return names


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the MatMuls by a weight; activation-by-activation MatMuls stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    initializers = {init.name for init in graph.initializer}
    activation_only = [node.name for node in graph.node
                       if node.op_type == "MatMul" and not any(name in initializers for name in node.input)]
    quantize_logger = logging.getLogger()
    level = quantize_logger.level
    quantize_logger.setLevel(logging.ERROR)  # ORT's "consider pre-processing" notice goes to the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_only,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quantize_logger.setLevel(level)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    return {
        "rows": len(reference),
        "label_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 1.0,
        "max_abs_probability_difference": float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
        "mean_abs_probability_difference": float(np.abs(reference - candidate).mean()) if len(reference) else 0.0,
    }


def top_two_margin(proba: np.ndarray) -> np.ndarray:
    """Highest minus second-highest probability per row (how far a row is from a label flip)."""
    if proba.shape[1] < 2:
        return np.ones(len(proba))
    top = np.partition(proba, -2, axis=1)
    return top[:, -1] - top[:, -2]


def cascade(int8: np.ndarray, fp32: np.ndarray, margin_below: float) -> np.ndarray:
    """int8 probabilities, with rows whose int8 margin is below ``margin_below`` taken from fp32."""
    rescore = top_two_margin(int8) < margin_below
    return np.where(rescore[:, None], fp32, int8)


def export_encoder(
    model,
    encode: Callable[[list[int]], dict],
    *,
    directory: Path,
    precision: str,
    calibration_rows: int,
    reference_proba: np.ndarray,
    predict_onnx: Callable[[Path], np.ndarray],
    min_agreement: float,
) -> ExportOutcome:
    """Write ``directory/model.onnx`` at ``precision`` ("fp32", "int8" or "auto").

    ``encode(rows)`` tokenizes calibration rows as torch tensors; ``reference_proba`` is the fp32 torch
    model's output on the check rows and ``predict_onnx(path)`` scores the same rows with an ONNX file.
    The check rows are split in two halves: the rescoring margin is chosen on the first, and the
    agreement reported (and required) is measured on the second, which took no part in the choice.
    """
    import copy

    started = time.perf_counter()
    model = _with_eager_attention(model)
    fp32_path = directory / ONNX_FILE
    sample = encode([0, 1] if calibration_rows > 1 else [0])
    names = export_graph(model, sample, fp32_path)
    fp32_proba = predict_onnx(fp32_path)
    exact = agreement(reference_proba, fp32_proba)
    if exact["label_agreement"] < 1.0 or exact["max_abs_probability_difference"] > 1e-3:
        raise ModelError(f"the fp32 ONNX graph does not reproduce the torch model ({exact}); this architecture "
                         "cannot be exported faithfully with the TorchScript exporter.")
    outcome = ExportOutcome(precision="fp32", onnx_file=fp32_path, input_names=names, check=exact)
    outcome.attempts.append({"precision": "fp32", **exact})
    if precision == "fp32":
        outcome.seconds = time.perf_counter() - started
        return outcome

    smoothed = copy.deepcopy(model).eval()
    smooth_linears(smoothed, encode, calibration_rows)
    smoothed_path, int8_path = directory / "smoothed.fp32.onnx", directory / "model.int8.onnx"
    try:
        export_graph(smoothed, sample, smoothed_path)
        quantize_int8(smoothed_path, int8_path)
        int8_proba = predict_onnx(int8_path)
    finally:
        smoothed_path.unlink(missing_ok=True)
    half = len(reference_proba) // 2
    tune, check = slice(0, half), slice(half, None)
    # Much stricter on the tuning half: label flips are rare, so a margin that only just passes on one half
    # often fails on the other.
    tune_target = 1.0 - (1.0 - min_agreement) / 4
    tuning = {m: agreement(reference_proba[tune], cascade(int8_proba[tune], fp32_proba[tune], m))["label_agreement"]
              for m in RESCORE_MARGINS}
    margin_below = next((m for m in RESCORE_MARGINS if tuning[m] >= tune_target), None)
    plain = agreement(reference_proba[check], int8_proba[check])
    outcome.attempts.append({"precision": "int8", "rescore_margin_below": 0.0, **plain,
                             "tuning_half": {"rows": half, "target": tune_target,
                                             "agreement_by_margin": {str(m): a for m, a in tuning.items()}}})
    if margin_below is not None:
        result = agreement(reference_proba[check], cascade(int8_proba[check], fp32_proba[check], margin_below))
        result["rescored_share"] = float((top_two_margin(int8_proba[check]) < margin_below).mean())
        outcome.attempts.append({"precision": "int8", "rescore_margin_below": margin_below, **result})
        if result["label_agreement"] >= min_agreement:
            outcome.precision, outcome.check, outcome.rescore_margin_below = "int8", result, margin_below
            if margin_below > 0:
                fp32_path.replace(directory / RESCORE_FILE)
            int8_path.replace(fp32_path)
    int8_path.unlink(missing_ok=True)
    outcome.seconds = time.perf_counter() - started
    if outcome.precision != "int8" and precision == "int8":
        best = max(a["label_agreement"] for a in outcome.attempts if a["precision"] == "int8")
        raise ModelError(
            f"the int8 export gives the fp32 model's label on at most {best:.2%} of {plain['rows']} held-back "
            f"check rows, even with uncertain rows re-scored in fp32: below --min-agreement {min_agreement:.2%}. "
            "Export with --precision fp32 (exact), or lower --min-agreement if that is acceptable."
        )
    return outcome
