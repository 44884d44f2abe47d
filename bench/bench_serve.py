"""Load test of `cli serve` on loopback: micro-batching against --max-batch-size 1, in the same run.

For each server setting a real server is started (a subprocess on a free 127.0.0.1 port); for each
number of concurrent clients, every client sends single-text /predict requests back to back for
--seconds, then the requests/s and the p50/p95/p99 latencies are printed, and the ratio of the two
settings at each concurrency. Rounds alternate the two settings so that drift on a shared machine
hits both. The load is bounded in time and count and only ever goes to 127.0.0.1.

    uv run python bench/bench_serve.py --model-path artifacts/experiments/quickstart/runs/minilm/final_model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUESTS_PER_RUN = 50_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, runtime: str, max_batch_size: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--quiet", "serve", "--model-path", str(model), "--port", str(port),
         "--runtime", runtime, "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not become ready in 180 s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _percentiles(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed, "p50_ms": pct(0.50),
            "p95_ms": pct(0.95), "p99_ms": pct(0.99), "mean_ms": 1000 * statistics.fmean(latencies)}


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, float]:
    """The httpx client: one AsyncClient, ``clients`` keep-alive connections."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(rng: random.Random, http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at and len(latencies) < MAX_REQUESTS_PER_RUN:
            started = time.perf_counter()
            response = await http.post("/predict", json={"text": rng.choice(texts)})
            if response.status_code != 200:
                errors += 1
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        for warm in range(3):
            await http.post("/predict", json={"text": texts[warm]})
        began = time.perf_counter()
        await asyncio.gather(*(client(random.Random(i), http) for i in range(clients)))
        elapsed = time.perf_counter() - began
    return _percentiles(latencies, elapsed, errors)


async def load_raw(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, float]:
    """A lean client: ``clients`` keep-alive connections writing pre-encoded HTTP/1.1 requests and reading the
    answers by Content-Length, so the load generator takes little of the CPU the server shares with it."""
    host, port = url.removeprefix("http://").split(":")
    requests = []
    for text in texts:
        body = json.dumps({"text": text}).encode()
        requests.append(b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(rng: random.Random) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop_at and len(latencies) < MAX_REQUESTS_PER_RUN:
                started = time.perf_counter()
                writer.write(rng.choice(requests))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if head[9:12] != b"200":
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(random.Random(i)) for i in range(clients)))
    return _percentiles(latencies, time.perf_counter() - began, errors)


def model_only(model: Path, runtime: str, texts: list[str], batch: int, seconds: float) -> dict[str, float]:
    """Texts/s of the model alone (no HTTP), one text per call and ``batch`` texts per call: the ceiling of what
    micro-batching can gain (run in this process before any server starts)."""
    from mlops.core.model_folder import load_model
    from mlops.core.text_dataset import TextDataset

    loaded = load_model(model, runtime=runtime)
    rng = random.Random(0)
    rates = {}
    for size in (1, batch):
        loaded.predict_proba(TextDataset(texts=[rng.choice(texts) for _ in range(size)]))  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            loaded.predict_proba(TextDataset(texts=[rng.choice(texts) for _ in range(size)]))
            done += size
        rates[size] = done / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="per (setting, concurrency, round)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--texts", type=Path, default=ROOT / "data" / "sample" / "new_reviews.csv")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: a lean asyncio client (default); httpx: httpx.AsyncClient, which takes 2-7 ms of "
                             "CPU per request from the cores the server runs on")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    import csv

    with args.texts.open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    ceiling = model_only(args.model_path, args.runtime, texts, args.max_batch_size, args.seconds)
    print(f"model alone, no HTTP: {ceiling[1]:.1f} texts/s one per call, {ceiling[args.max_batch_size]:.1f} texts/s "
          f"{args.max_batch_size} per call: {ceiling[args.max_batch_size] / ceiling[1]:.2f}x", flush=True)
    settings = {"micro-batching": args.max_batch_size, "batch size 1": 1}
    results: dict[str, dict[int, list[dict[str, float]]]] = {name: {c: [] for c in args.clients} for name in settings}
    for round_ in range(args.rounds):
        order = list(settings) if round_ % 2 == 0 else list(reversed(settings))
        for name in order:
            process, url = start_server(args.model_path, args.runtime, settings[name], args.max_wait_ms)
            try:
                info = httpx.get(f"{url}/info").json()
                for clients in args.clients:
                    server_cpu, client_cpu = _cpu_seconds(process.pid), _cpu_seconds(os.getpid())
                    outcome = asyncio.run((load_raw if args.client == "raw" else load)(url, texts, clients,
                                                                                       args.seconds))
                    n = max(outcome["requests"], 1)
                    outcome["server_cpu_ms"] = 1000 * (_cpu_seconds(process.pid) - server_cpu) / n
                    outcome["client_cpu_ms"] = 1000 * (_cpu_seconds(os.getpid()) - client_cpu) / n
                    results[name][clients].append(outcome)
                    print(f"round {round_ + 1} {name:>15} {clients:>3} clients: {outcome['rps']:7.1f} req/s, p50 "
                          f"{outcome['p50_ms']:6.1f} ms, p95 {outcome['p95_ms']:6.1f}, p99 {outcome['p99_ms']:6.1f}, "
                          f"{outcome['requests']} requests, {outcome['errors']} errors; CPU per request: server "
                          f"{outcome['server_cpu_ms']:.2f} ms, load client {outcome['client_cpu_ms']:.2f} ms", flush=True)
            finally:
                stop_server(process)
    print(f"\nmodel {args.model_path} ({info['runtime']}, {info.get('precision')}), --max-wait-ms {args.max_wait_ms}; "
          f"medians over {args.rounds} rounds of {args.seconds:g} s")
    print(f"{'clients':>7} | {'setting':>15} | {'req/s':>7} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | "
          f"{'server CPU':>10} | {'client CPU':>10}  (CPU: ms per request)")
    summary = {}
    for clients in args.clients:
        row = {}
        for name in settings:
            runs = results[name][clients]
            row[name] = {k: statistics.median(r[k] for r in runs)
                         for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms", "client_cpu_ms")}
            m = row[name]
            print(f"{clients:>7} | {name:>15} | {m['rps']:7.1f} | {m['p50_ms']:7.1f} | {m['p95_ms']:7.1f} | "
                  f"{m['p99_ms']:7.1f} | {m['server_cpu_ms']:10.2f} | {m['client_cpu_ms']:10.2f}")
        ratio = row["micro-batching"]["rps"] / row["batch size 1"]["rps"]
        print(f"{clients:>7} | {'ratio':>15} | {ratio:6.2f}x")
        summary[clients] = {**row, "ratio": ratio}
    top = max(args.clients)
    print(f"\nat {top} clients: micro-batching {summary[top]['ratio']:.2f}x the requests/s of batch size 1 "
          f"(goal >= 4x), p99 {summary[top]['micro-batching']['p99_ms']:.0f} ms (goal < 300 ms)")
    if args.json_out:
        args.json_out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "results": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
