"""Same seed, same numbers under load: a MiniLM backtest idle and beside a busy process, in one run.

    uv run python bench/bench_threads_under_load.py                 # 1,200 MR rows, 3 folds (about 25 minutes)
    uv run python bench/bench_threads_under_load.py --rows 600 --scenarios idle "idle, passive" busy "busy, passive"

Each scenario is the real CLI in a subprocess, on the same splits (seed 42), in its own artifacts folder:

- ``idle``: the default (torch threads fixed to the physical cores, OpenMP threads spinning about 1,000 checks at a
  barrier before they sleep: ``GOMP_SPINCOUNT=1000``), nothing else running;
- ``idle, passive``: ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once; the default until 2026-12-07);
- ``busy`` and ``busy, passive``: the same two beside one process that keeps a core busy;
- ``busy, spinning OpenMP``: the OpenMP library's default wait policy (threads spin for milliseconds at barriers);
- ``busy, adaptive``: ``num_threads: adaptive`` (the old default: as many threads as cores left free).

Prints each scenario's wall time, its ratio to ``busy, adaptive`` (or the first scenario run), its per-fold accuracy and whether every
fold's metrics are identical to the idle run's. The recipe is fixed here (MiniLM, 3 epochs, as shipped until
2026-12), so the figure does not move when the shipped config does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"epochs": 3, "batch_size": 32, "learning_rate": 8e-05, "weight_decay": 0.01, "warmup_ratio": 0.1,
          "scheduler": "linear", "max_length": 64, "early_stopping_patience": 1, "precision": "auto"}
SCENARIOS = [  # name, busy process?, OpenMP variables (None: the CLI's default), num_threads
    ("idle", False, None, None),
    ("idle, passive", False, {"OMP_WAIT_POLICY": "PASSIVE"}, None),
    ("busy", True, None, None),
    ("busy, passive", True, {"OMP_WAIT_POLICY": "PASSIVE"}, None),
    ("busy, spinning OpenMP", True, {"OMP_WAIT_POLICY": ""}, None),  # "" is no policy: libgomp's spinning default
    ("busy, adaptive", True, None, "adaptive"),
]


def _config(folder: Path, num_threads: str | None) -> Path:
    path = folder / "minilm_bench.json"
    arguments = {**RECIPE, **({"num_threads": num_threads} if num_threads else {})}
    path.write_text(json.dumps({"module_path": "models.hf_encoder.model", "class_name": "HFEncoderClassifier",
                                "model_name": "sentence-transformers/all-MiniLM-L6-v2",
                                "training_arguments": arguments}))
    return path


def _cli(*args: str, artifacts: Path, openmp: dict[str, str] | None) -> None:
    env = {**os.environ, "MLOPS_ARTIFACTS_DIR": str(artifacts)}
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    env.update(openmp or {})
    subprocess.run([sys.executable, str(ROOT / "main.py"), *args], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def _folds(artifacts: Path) -> list[dict]:
    run = artifacts / "experiments" / "bench" / "runs" / "minilm_bench" / "backtesting"
    return [json.loads(p.read_text()) for p in sorted(run.glob("fold_*/metrics.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200, help="rows sampled from the full MR set")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", choices=[name for name, *_ in SCENARIOS],
                        default=[name for name, *_ in SCENARIOS])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        data = Path(tmp) / "mr_rows.csv"
        pd.read_csv(ROOT / "data" / "mr" / "mr_full.csv").sample(n=args.rows, random_state=42).to_csv(data, index=False)
        results = {}
        for name, busy, openmp, threads in (s for s in SCENARIOS if s[0] in args.scenarios):
            folder = Path(tmp) / name.replace(" ", "_").replace(",", "")
            folder.mkdir()
            _cli("generate-splits", "--experiment-id", "bench", "--input-file", str(data), "--cv-folds",
                 str(args.folds), artifacts=folder, openmp=openmp)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                started = time.perf_counter()
                _cli("run-backtesting", "--experiment-id", "bench", "--model-config-name",
                     str(_config(folder, threads)), artifacts=folder, openmp=openmp)
                seconds = time.perf_counter() - started
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            results[name] = (seconds, _folds(folder))
            print(f"{name}: {seconds:.0f} s", flush=True)
        first = next(iter(results))
        idle = [fold["metrics"] for fold in results["idle" if "idle" in results else first][1]]
        reference = results["busy, adaptive" if "busy, adaptive" in results else first][0]
        print(f"\n{args.rows} MR rows, {args.folds}-fold MiniLM backtest, seed 42")
        print(f"{'scenario':<24} {'wall s':>7} {'vs ' + ('adaptive' if 'busy, adaptive' in results else first):>11}  {'threads':>8}  identical to idle  accuracy per fold")
        for name, (seconds, folds) in results.items():
            threads = sorted({t for fold in folds for t in fold["runtime"].get("torch_threads_used", [])})
            same = [fold["metrics"] for fold in folds] == idle
            accuracy = " ".join(f"{fold['metrics']['accuracy']:.4f}" for fold in folds)
            print(f"{name:<24} {seconds:>7.0f} {reference / seconds:>10.2f}x  {str(threads):>8}  {str(same):<17}  "
                  f"{accuracy}")


if __name__ == "__main__":
    main()
