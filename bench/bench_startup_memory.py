"""Start-up time and prediction memory, measured on this machine.

    uv run python bench/bench_startup_memory.py --model-path artifacts/experiments/quickstart/runs/minilm/final_model

Prints: `cli --help` wall time (target <= 1 s), `predict-new --text` end to end (target <= 4 s; with the
torch model and, when the folder has one from `cli export-model`, with its ONNX export), `cli serve`'s time
from launch to its first 200 from /ready (each runtime), and
peak RSS of `predict-new` over a generated 1,000,000-row CSV (target < 2 GB), next to the peak RSS
of a 10,000-row run as the baseline: flat memory means the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving_probe import free_port, wait_until_ready  # bench/, the script's own folder

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import main; main.run()"]


def timed(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def serve_ready_seconds(model: str, runtime: str, repeats: int = 3) -> float:
    """Median seconds from launching `cli serve` to its first 200 from /ready (the process is then stopped)."""
    times = []
    for _ in range(repeats):
        port = free_port()
        started = time.perf_counter()
        server = subprocess.Popen(CLI + ["serve", "--model-path", model, "--runtime", runtime, "--port", str(port)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            seconds = wait_until_ready(server, port, started)
            if seconds is None:
                raise RuntimeError(f"cli serve --runtime {runtime} was not ready (exit code {server.poll()})")
            times.append(seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return statistics.median(times)


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run argv in a child and return (wall seconds, that child's own peak RSS in MB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: the progress bar would fill a pipe
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not the maximum over all children
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise subprocess.CalledProcessError(child.returncode, argv, stderr=errors.read())
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def write_reviews(path: Path, rows: int) -> None:
    sample = list(csv.DictReader((ROOT / "data" / "mr" / "mr_full.csv").open(encoding="utf-8")))
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, sample[rng.randrange(len(sample))]["text"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    model = str(args.model_path.resolve())

    help_s = timed(CLI + ["--help"], repeats=5)
    print(f"cli --help: {help_s:.2f} s (median of 5; target <= 1 s)")
    runtimes = ["torch", "onnx"] if (args.model_path / "onnx").is_dir() else ["auto"]
    seconds = {}
    for runtime in runtimes:
        seconds[runtime] = timed(CLI + ["predict-new", "--model-path", model, "--runtime", runtime, "--text",
                                        "A gorgeous, moving film."], repeats=3)
        name = {"torch": "the torch model", "onnx": "its ONNX export", "auto": "the model"}[runtime]
        print(f"predict-new --text with {name}: {seconds[runtime]:.2f} s end to end (median of 3; target <= 4 s)")
    if len(runtimes) == 2:
        print(f"start-up ratio, torch / ONNX export: {seconds['torch'] / seconds['onnx']:.1f}x")
    for runtime in runtimes:
        print(f"serve --runtime {runtime}: ready (GET /ready -> 200) {serve_ready_seconds(model, runtime):.2f} s "
              "after launch (median of 3)")
    if args.skip_memory:
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.csv", Path(tmp) / "big.csv"
        write_reviews(small, 10_000)
        write_reviews(big, args.rows)
        base_s, base_mb = peak_rss_mb(CLI + ["predict-new", "--model-path", model, "--input-file", str(small),
                                             "--output-file", str(Path(tmp) / "small_out.csv")])
        big_s, big_mb = peak_rss_mb(CLI + ["predict-new", "--model-path", model, "--input-file", str(big),
                                           "--output-file", str(Path(tmp) / "big_out.csv")])
        print(f"predict-new 10,000 rows: {base_s:.1f} s, peak RSS {base_mb:.0f} MB (baseline)")
        print(f"predict-new {args.rows:,} rows: {big_s:.1f} s ({args.rows / big_s:.0f} rows/s), peak RSS "
              f"{big_mb:.0f} MB (target < 2048 MB); ratio to baseline {big_mb / base_mb:.2f}x")


if __name__ == "__main__":
    main()
