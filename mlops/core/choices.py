"""The fixed choices that the CLI offers and the services take, defined once (standard library only, so the
CLI can import them at start-up)."""

from __future__ import annotations

from enum import Enum


class BacktestingStrategy(str, Enum):
    cv = "cv"
    train_val = "train-val"


class RunType(str, Enum):
    backtesting = "backtesting"
    performance_estimation = "performance_estimation"
    final_model = "final_model"


class Runtime(str, Enum):
    """What scores a model folder: ``auto`` picks its ONNX export on the CPU when there is one, else torch."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class ExportPrecision(str, Enum):
    auto = "auto"
    int8 = "int8"
    fp32 = "fp32"


class NearDuplicates(str, Enum):
    """How generate-splits finds near-duplicate texts to keep together (exact duplicates always are)."""

    off = "off"
    minhash = "minhash"
    embedding = "embedding"
