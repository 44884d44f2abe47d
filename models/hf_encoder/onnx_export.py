"""ONNX Runtime export of a fine-tuned encoder: exact fp32, or int8 checked against the fp32 model.

int8 recipe (measured on MiniLM-L6, 2 CPU cores with AVX512-VNNI): per-channel int8 weights and dynamic
per-tensor uint8 activations for every weight matmul of the encoder (ONNX Runtime's MatMulInteger), with
two guards against the activation outliers that make BERT-style models hard to quantize:

* SmoothQuant-style rescaling: each Linear's input is divided per channel by ``s = amax^a / wmax^(1-a)``
  (a = 0.8, amax measured on calibration rows) and its weight columns multiplied by ``s``, which moves the
  outliers into the per-channel-quantized weights;
* the Linears whose simulated quantization error is largest stay fp32, one more at a time, until the
  int8 model gives the fp32 model's label on ``min_agreement`` of the check rows.

Attention score matmuls, embeddings, the pooler and the classifier head stay fp32.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops.errors import ModelError

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 17
SMOOTHING_ALPHA = 0.8
#: At most this many Linears are kept in fp32 before int8 is given up.
MAX_FP32_LINEARS = 4
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ExportOutcome:
    precision: str  # "fp32" or "int8"
    onnx_file: Path
    input_names: list[str]
    check: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fp32_linears: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _encoder_linears(model) -> dict[str, Any]:
    import torch

    head = ("classifier", "pooler", "pre_classifier", "score")
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(part in head for part in name.split("."))}


class _SmoothedLinear:
    """Factory for a Linear whose input is divided by ``s`` and whose weight columns are multiplied by it."""

    @staticmethod
    def build(linear, scale):
        import torch

        class SmoothedLinear(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("inv_scale", (1.0 / scale).to(torch.float32))
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


def _quantize_activation(x):
    """Per-tensor asymmetric uint8, as ONNX Runtime's DynamicQuantizeLinear does."""
    import torch

    lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def _quantize_weight(w):
    """Per-output-channel symmetric int8."""
    import torch

    scale = torch.clamp(w.abs().amax(dim=1, keepdim=True) / 127.0, min=1e-12)
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def _run_batches(model, encode: Callable[[list[int]], dict], n: int, batch_size: int) -> None:
    import torch

    with torch.inference_mode():
        for start in range(0, n, batch_size):
            model(**encode(list(range(start, min(start + batch_size, n)))))


def smooth_and_rank(model, encode: Callable[[list[int]], dict], n_rows: int, batch_size: int = 64,
                    alpha: float = SMOOTHING_ALPHA) -> list[str]:
    """Apply SmoothQuant rescaling in place; return the encoder Linears, worst simulated int8 error first."""
    import torch

    linears = _encoder_linears(model)
    if not linears:
        raise ModelError("the model has no encoder Linear layers to quantize; export it with --precision fp32.")
    amax: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach().float()
            m = x.abs().reshape(-1, x.shape[-1]).amax(0)
            amax[name] = torch.maximum(amax[name], m) if name in amax else m
        return hook

    handles = [linear.register_forward_hook(record(name)) for name, linear in linears.items()]
    try:
        _run_batches(model, encode, n_rows, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    smoothed = {}
    for name, linear in linears.items():
        wmax = linear.weight.detach().abs().amax(0).clamp(min=1e-5)
        scale = (amax[name].clamp(min=1e-5) ** alpha / wmax ** (1 - alpha)).clamp(min=1e-5)
        smoothed[name] = _SmoothedLinear.build(linear, scale)
        _replace_module(model, name, smoothed[name])

    errors = dict.fromkeys(smoothed, 0.0)
    norms = dict.fromkeys(smoothed, 0.0)

    def measure(name):
        def hook(module, inputs, output):
            x = inputs[0].detach().float() * module.inv_scale
            exact = output.detach().float()
            approx = torch.nn.functional.linear(_quantize_activation(x), _quantize_weight(module.inner.weight),
                                                module.inner.bias)
            errors[name] += float(((approx - exact) ** 2).sum())
            norms[name] += float((exact ** 2).sum())
        return hook

    handles = [module.register_forward_hook(measure(name)) for name, module in smoothed.items()]
    try:
        _run_batches(model, encode, min(n_rows, 8 * batch_size), batch_size)
    finally:
        for handle in handles:
            handle.remove()
    relative = {name: errors[name] / max(norms[name], 1e-12) for name in smoothed}
    return sorted(relative, key=relative.get, reverse=True)


def export_graph(model, sample: dict, path: Path) -> list[str]:
    """Trace ``model`` to ONNX with dynamic batch and sequence axes; returns the graph's input names."""
    import warnings

    import torch

    names = [name for name in INPUT_ORDER if name in sample]
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return names


def _weight_digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def matmul_nodes_by_linear(onnx_path: Path, linears: dict[str, Any]) -> dict[str, str]:
    """ONNX MatMul node name for each torch Linear, matched by the exact weight values it multiplies by."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {init.name: init for init in graph.initializer}
    by_digest = {}
    for node in graph.node:
        if node.op_type == "MatMul":
            for name in node.input:
                if name in initializers:
                    by_digest[_weight_digest(numpy_helper.to_array(initializers[name]))] = node.name
    found = {}
    for name, module in linears.items():
        weight = module.inner.weight if hasattr(module, "inner") else module.weight
        digest = _weight_digest(weight.detach().float().T.contiguous().numpy())
        if digest in by_digest:
            found[name] = by_digest[digest]
    return found


def quantize_int8(source: Path, target: Path, keep_fp32: Sequence[str]) -> None:
    """Dynamic int8 quantization of the weight MatMuls, leaving ``keep_fp32`` nodes and all others in fp32."""
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
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_only + list(keep_fp32),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quantize_logger.setLevel(level)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    return {
        "rows": int(len(reference)),
        "label_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 1.0,
        "max_abs_probability_difference": float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
        "mean_abs_probability_difference": float(np.abs(reference - candidate).mean()) if len(reference) else 0.0,
    }


def export_encoder(
    model,
    encode: Callable[[list[int], str], dict],
    *,
    directory: Path,
    precision: str,
    calibration_rows: int,
    reference_proba: np.ndarray,
    predict_onnx: Callable[[Path], np.ndarray],
    min_agreement: float,
) -> ExportOutcome:
    """Write ``directory/model.onnx`` at ``precision`` ("fp32", "int8" or "auto").

    ``encode(rows, which)`` tokenizes calibration (``which="calibration"``) rows as torch tensors;
    ``reference_proba`` is the fp32 torch model's output on the check rows and ``predict_onnx(path)``
    scores the same rows with an ONNX file.
    """
    import copy

    started = time.perf_counter()
    fp32_path = directory / ONNX_FILE
    sample = encode([0, 1] if calibration_rows > 1 else [0], "calibration")
    names = export_graph(model, sample, fp32_path)
    exact = agreement(reference_proba, predict_onnx(fp32_path))
    if exact["label_agreement"] < 1.0 or exact["max_abs_probability_difference"] > 1e-3:
        raise ModelError(f"the fp32 ONNX graph does not reproduce the torch model ({exact}); this architecture "
                         "cannot be exported faithfully with the TorchScript exporter.")
    outcome = ExportOutcome(precision="fp32", onnx_file=fp32_path, input_names=names, check=exact)
    outcome.attempts.append({"precision": "fp32", **exact})
    if precision == "fp32":
        outcome.seconds = time.perf_counter() - started
        return outcome

    smoothed = copy.deepcopy(model).eval()
    ranked = smooth_and_rank(smoothed, lambda rows: encode(rows, "calibration"), calibration_rows)
    smoothed_path = directory / "smoothed.fp32.onnx"
    export_graph(smoothed, sample, smoothed_path)
    nodes = matmul_nodes_by_linear(smoothed_path, _encoder_linears_of_smoothed(smoothed))
    int8_path = directory / "model.int8.onnx"
    try:
        for keep in range(0, MAX_FP32_LINEARS + 1):
            kept = [name for name in ranked[:keep] if name in nodes]
            quantize_int8(smoothed_path, int8_path, [nodes[name] for name in kept])
            check = agreement(reference_proba, predict_onnx(int8_path))
            outcome.attempts.append({"precision": "int8", "fp32_linears": kept, **check})
            logger.info("int8 with %d fp32 linears: label agreement %.4f", keep, check["label_agreement"])
            if check["label_agreement"] >= min_agreement:
                int8_path.replace(fp32_path)
                outcome.precision, outcome.check, outcome.fp32_linears = "int8", check, kept
                break
    finally:
        smoothed_path.unlink(missing_ok=True)
        int8_path.unlink(missing_ok=True)
    outcome.seconds = time.perf_counter() - started
    if outcome.precision != "int8" and precision == "int8":
        best = max(a["label_agreement"] for a in outcome.attempts if a["precision"] == "int8")
        raise ModelError(
            f"the int8 export gives the fp32 model's label on at most {best:.2%} of {exact['rows']} check rows, "
            f"below --min-agreement {min_agreement:.2%}; export with --precision fp32 (exact) or lower "
            "--min-agreement if that is acceptable."
        )
    return outcome


def _encoder_linears_of_smoothed(model) -> dict[str, Any]:
    return {name: module for name, module in model.named_modules() if hasattr(module, "inv_scale")}
