"""The quickstart's plan: its stages, the trainings each runs, and the time it should take on this machine.

The estimate scales stage times measured on a reference machine (2 AMD EPYC cores, fp32) by how fast this
machine multiplies fp32 matrices (a fraction of a second of measuring): the encoder stages follow the
arithmetic, the rest (start-up, TF-IDF, files) is counted as it was measured.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The configs a plain ``cli quickstart`` compares, and those of ``--full`` (the shipped MiniLM recipe).
QUICK_MODELS = ("tfidf_logreg", "minilm_quick")
FULL_MODELS = ("tfidf_logreg", "minilm")

#: The reference machine: its fp32 matrix-multiply throughput (``matmul_gflops``, 2 threads) and the seconds each
#: stage took there on the bundled sample, as (arithmetic, other): ``cli quickstart`` on fresh artifacts, seed 42,
#: 2 AMD EPYC cores without bf16, 2026-12-07 (docs/benchmarks.md#quickstart-in-five-minutes). The machine's
#: speed moves with its neighbours: minilm_quick's figures are typical of four runs, whose matmul measured
#: 64 to 95 GFLOP/s (median 77).
REFERENCE_GFLOPS = 77.0
REFERENCE_SECONDS: dict[str, dict[str, tuple[float, float]]] = {
    "tfidf_logreg": {"backtest": (0.0, 5.0), "estimate": (0.0, 2.0), "final": (0.0, 3.0)},
    "minilm_quick": {"backtest": (118.0, 7.0), "estimate": (45.0, 3.0), "final": (80.0, 25.0)},
    # --full, measured at 66 GFLOP/s (20 min 22 s, 10 min 8 s, 6 min 40 s), its arithmetic scaled here to 77
    "minilm": {"backtest": (1040.0, 5.0), "estimate": (517.0, 2.0), "final": (335.0, 5.0)},
}
START_SECONDS = 8.0  # the command's start-up and the splits
PREDICT_SECONDS = (1.0, 1.0)  # 300 unseen reviews with the final model's ONNX export, and their score


@dataclass
class Stage:
    """One step of the quickstart: what it does, how many trainings, and its estimate in seconds (None: unknown)."""

    name: str
    detail: str
    trainings: int = 0
    estimate_s: float | None = None


@dataclass
class QuickstartPlan:
    stages: list[Stage]
    models: list[str]
    gflops: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def trainings(self) -> int:
        return sum(stage.trainings for stage in self.stages)

    @property
    def estimate_s(self) -> float | None:
        if any(stage.estimate_s is None for stage in self.stages):
            return None
        return sum(stage.estimate_s for stage in self.stages)


def csv_rows(path: Path) -> int:
    """Data rows of a CSV file with a header (quoted line breaks count once)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def matmul_gflops(device: str | None = None, size: int = 1024, seconds: float = 0.3) -> float:
    """fp32 matrix-multiply throughput of ``device`` (default: CUDA if there is one, else the CPU), in GFLOP/s."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up (thread pool, kernels)
    runs, started = 0, time.perf_counter()
    while True:
        a @ b
        runs += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2 * size**3 * runs / elapsed / 1e9


def _scaled(name: str, stage: str, speed: float | None) -> float | None:
    reference = REFERENCE_SECONDS.get(name, {}).get(stage)
    if reference is None or speed is None:
        return None
    arithmetic, other = reference
    return arithmetic * speed + other


def plan_quickstart(models: list[str], *, cv_folds: int, rows: int, holdout_rows: int, new_rows: int,
                    export: bool, gflops: float | None) -> QuickstartPlan:
    """The stages of ``Application.quickstart`` for the configs named ``models`` (run names, not paths);
    estimates from ``gflops`` (None: none)."""
    speed = REFERENCE_GFLOPS / gflops if gflops else None
    stages = [Stage("splits", f"{rows:,} labelled reviews: a {holdout_rows}-row hold-out, {cv_folds} folds",
                    estimate_s=START_SECONDS if speed else None)]
    for name in models:
        stages.append(Stage(f"backtest {name}", f"{cv_folds} folds, a fresh model per fold", cv_folds,
                            _scaled(name, "backtest", speed)))
        stages.append(Stage(f"estimate {name}", "train on train-val, score the untouched hold-out once", 1,
                            _scaled(name, "estimate", speed)))
    finals = [_scaled(name, "final", speed) for name in models]
    known = [value for value in finals if value is not None]
    final = max(known) if len(known) == len(finals) else None  # the best model is known only after the backtests
    stages.append(Stage("final model", "the best backtested model, all rows (95/5)"
                        + (" + ONNX export" if export else ""), 1, final))
    stages.append(Stage("predict", f"{new_rows} unseen reviews, scored against their labels",
                        estimate_s=sum(PREDICT_SECONDS) if speed else None))
    plan = QuickstartPlan(stages, list(models), gflops)
    unknown = [name for name in models if name not in REFERENCE_SECONDS]
    if unknown:
        plan.notes.append(f"no time estimate for {', '.join(unknown)} (measured only for "
                          f"{', '.join(REFERENCE_SECONDS)})")
    return plan
