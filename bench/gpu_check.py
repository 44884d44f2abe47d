"""The CUDA path end to end, recorded: one script to run on a machine with a GPU (under 8 minutes on an H100).

    bash bench/gpu_check.sh [OUT_DIR]            # or: uv run python bench/gpu_check.py --out OUT_DIR

It runs the real CLI with --device cuda and writes OUT_DIR/gpu_check.json plus a summary on stdout:
1. the card, and its measured dense matmul throughput in fp32, TF32 and bf16 (8192^3);
2. a MiniLM backtest (2 folds of the shipped MR sample) in bf16: samples/s and model FLOP utilisation
   (6 FLOP per non-embedding parameter per token, against the measured bf16 matmul);
3. the same backtest again in a fresh folder: the same seed must give the same numbers on the GPU;
4. a final model in bf16 and one in fp32 with TF32 matmuls, with their validation figures and times;
5. predict-new on CUDA (file and --text) and serve on CUDA (/ready, /predict agreeing with predict-new);
6. an LLM classifier's SFT step (Gemma 3 270M + LoRA through TRL, a few updates);
7. DDP under torchrun on one GPU (world size 1, used or refused with a clear message).
Without CUDA it stops with exit code 3, unless --allow-cpu (a plumbing check with --model-config and --rows
small, as the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from serving_probe import free_port, wait_until_ready  # bench/, the script's own folder

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "mr_sample.csv"
NEW = ROOT / "data" / "sample" / "new_reviews.csv"


def cli(*args: str, artifacts: Path, device: str, launcher: list[str] | None = None, check: bool = True,
        timeout: int = 600) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(ROOT / "main.py"), *args]
    if args[0] not in ("generate-splits", "compare-models", "evaluate-prediction") and "--device" not in args:
        command += ["--device", device]
    env = {**os.environ, "MLOPS_ARTIFACTS_DIR": str(artifacts), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    done.seconds = time.perf_counter() - started
    if check and done.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def matmul_tflops(device: str) -> dict[str, float]:
    import torch

    if not device.startswith("cuda"):
        return {}
    size, out = 8192, {}
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < 2.0:
            a @ b
            n += 1
        torch.cuda.synchronize()
        out[name] = 2 * size**3 * n / (time.perf_counter() - started) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def config_file(folder: Path, base: str, name: str, **arguments) -> Path:
    """A copy of model config ``base`` (a name in model_configs/ or a path) with training arguments changed."""
    source = Path(base) if base.endswith(".json") else ROOT / "model_configs" / f"{base}.json"
    config = json.loads(source.read_text())
    config["training_arguments"] = {**config.get("training_arguments", {}), **arguments}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def fold_records(artifacts: Path, experiment: str, config: str) -> list[dict]:
    base = artifacts / "experiments" / experiment / "runs" / config / "backtesting"
    return [json.loads((d / "metrics.json").read_text()) for d in sorted(base.glob("fold_*"))]


def model_flop_utilisation(records: list[dict], rows_file: Path, tokenizer_source: str, peak_tflops: float | None):
    """Training samples/s and the model arithmetic it implies against the measured bf16 matmul."""
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    runtime = records[0]["runtime"]
    samples_per_s = sum(r["runtime"].get("train_samples_per_second", 0.0) for r in records) / len(records)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    texts = pd.read_csv(rows_file)["text"].astype(str).tolist()[:2000]
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=runtime.get("max_length", 256))
                 ["input_ids"]) / len(texts)
    params = runtime.get("trainable_parameters") or runtime.get("total_parameters")
    shape = AutoConfig.from_pretrained(tokenizer_source)
    embedding = (shape.vocab_size + shape.max_position_embeddings) * shape.hidden_size  # no matmul FLOPs
    tflops = 6 * (params - embedding) * tokens * samples_per_s / 1e12
    return {"samples_per_s": samples_per_s, "mean_tokens_per_sample": tokens, "model_tflops": tflops,
            "mfu_vs_bf16_matmul": None if not peak_tflops else tflops / peak_tflops,
            "precision": runtime.get("precision"), "tf32": runtime.get("tf32"), "device": runtime.get("device")}


def serve_check(model: Path, device: str, expected: list[str], texts: list[str]) -> dict:
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--quiet", "serve", "--model-path", str(model),
                               "--port", str(port), "--device", device, "--runtime", "torch"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready_s = wait_until_ready(server, port, started)
        if ready_s is None:
            if server.poll() is None:
                server.kill()
            raise SystemExit(f"FAILED: serve did not become ready:\n{server.communicate()[1][-3000:]}")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": texts}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
        labels = [p["label"] for p in body["predictions"]]
        return {"ready_s": ready_s, "agrees_with_predict_new": labels == expected, "rows": len(labels)}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()


def run(args) -> dict:
    import pandas as pd
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        print("no CUDA device here: nothing to check (--allow-cpu runs the same steps on the CPU as a plumbing "
              "check).")
        raise SystemExit(3)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report: dict = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        report["card"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    report["matmul_tflops"] = matmul_tflops(device)
    print("card:", report.get("card"), "matmul TFLOP/s:", report["matmul_tflops"], flush=True)

    rows = work / "rows.csv"
    pd.read_csv(SAMPLE).sample(n=min(args.rows, 3000), random_state=0).to_csv(rows, index=False)
    bf16 = "bf16" if device == "cuda" else "fp32"
    encoder = config_file(work, args.model_config, "encoder", precision=bf16, **args.overrides)
    tf32 = config_file(work, args.model_config, "encoder_tf32", precision="fp32", tf32=device == "cuda",
                       **args.overrides)
    runs = {}
    for name in ("a", "b"):  # the same seed twice, in fresh folders
        artifacts = work / f"artifacts_{name}"
        cli("generate-splits", "--experiment-id", "gpu", "--input-file", str(rows), "--cv-folds", "2",
            artifacts=artifacts, device=device)
        done = cli("run-backtesting", "--experiment-id", "gpu", "--model-config-name", str(encoder),
                   artifacts=artifacts, device=device)
        runs[name] = {"seconds": done.seconds, "folds": fold_records(artifacts, "gpu", "encoder")}
    a, b = runs["a"]["folds"], runs["b"]["folds"]
    report["backtest"] = {"seconds": runs["a"]["seconds"], "macro_f1": [r["metrics"]["macro_f1"] for r in a],
                          "same_seed_same_metrics": [r["metrics"] for r in a] == [r["metrics"] for r in b]}
    source = (a[0]["runtime"].get("model_source") or {}).get("source") or json.loads(encoder.read_text())["model_name"]
    report["training"] = model_flop_utilisation(a, rows, source, report["matmul_tflops"].get("bf16"))
    print("backtest:", report["backtest"], "\ntraining:", report["training"], flush=True)

    artifacts = work / "artifacts_a"
    report["final_models"] = {}
    for name, config in (("bf16", encoder), ("tf32", tf32)):
        done = cli("train-final-model", "--experiment-id", "gpu", "--model-config-name", str(config),
                   "--model-output-dir", str(work / f"final_{name}"), "--no-export", artifacts=artifacts, device=device)
        manifest = json.loads((work / f"final_{name}" / "manifest.json").read_text())
        report["final_models"][name] = {"seconds": done.seconds, "validation_macro_f1":
                                        (manifest.get("validation_metrics") or {}).get("macro_f1"),
                                        "precision": manifest["runtime"].get("precision"),
                                        "tf32": manifest["runtime"].get("tf32")}
    print("final models:", report["final_models"], flush=True)

    model = work / "final_bf16"
    done = cli("predict-new", "--model-path", str(model), "--input-file", str(NEW), "--output-file",
               str(work / "predictions.csv"), "--runtime", "torch", artifacts=artifacts, device=device)
    predicted = pd.read_csv(work / "predictions.csv")
    one = cli("predict-new", "--model-path", str(model), "--text", "A wonderful, moving film.", "--runtime", "torch",
              artifacts=artifacts, device=device)
    texts = predicted["text"].astype(str).tolist()[:32]
    report["predict"] = {"file_seconds": done.seconds, "rows": len(predicted), "text_seconds": one.seconds,
                         "text_output": one.stdout.strip().splitlines()[-1]}
    report["serve"] = serve_check(model, device, predicted["predicted_label"].tolist()[:32], texts)
    print("predict:", report["predict"], "\nserve:", report["serve"], flush=True)

    if not args.skip_llm:
        small = work / "llm_rows.csv"
        pd.read_csv(rows).head(120).to_csv(small, index=False)
        llm = config_file(work, "gemma270m_sft", "llm_sft", max_train_rows=64, per_device_batch_size=8)
        cli("generate-splits", "--experiment-id", "llm", "--input-file", str(small), "--cv-folds", "2",
            artifacts=artifacts, device=device)
        done = cli("train-final-model", "--experiment-id", "llm", "--model-config-name", str(llm), artifacts=artifacts,
                   device=device)
        manifest = json.loads((artifacts / "experiments/llm/runs/llm_sft/final_model/manifest.json").read_text())
        report["llm_sft"] = {"seconds": done.seconds, "device": manifest["runtime"].get("device"),
                             "validation_accuracy": (manifest.get("validation_metrics") or {}).get("accuracy")}
        print("llm sft:", report["llm_sft"], flush=True)

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    ddp = cli("run-backtesting", "--experiment-id", "gpu", "--model-config-name", str(encoder), "--force",
              artifacts=work / "artifacts_b", device=device, launcher=[torchrun, "--standalone", "--nproc_per_node=1"],
              check=False)
    records = fold_records(work / "artifacts_b", "gpu", "encoder") if ddp.returncode == 0 else []
    report["ddp_one_gpu"] = {"exit_code": ddp.returncode, "seconds": ddp.seconds,
                             "world_size": [(r["runtime"].get("distributed") or {}).get("world_size", 1)
                                            for r in records],
                             "same_metrics_as_single_process": [r["metrics"] for r in records] == [r["metrics"] for r in a]
                             if records else None,
                             "message": None if ddp.returncode == 0 else (ddp.stderr or ddp.stdout)[-500:]}
    print("ddp:", report["ddp_one_gpu"], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "artifacts" / "gpu_check")))
    parser.add_argument("--model-config", default="minilm", help="the encoder config (a name or a .json path)")
    parser.add_argument("--rows", type=int, default=3000, help="rows of the MR sample to use (at most 3,000)")
    parser.add_argument("--train-steps", type=int, default=None, help="override the config's train_steps")
    parser.add_argument("--skip-llm", action="store_true", help="leave out the LLM SFT step")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU (plumbing)")
    args = parser.parse_args()
    args.overrides = {} if args.train_steps is None else {"train_steps": args.train_steps}
    started = time.perf_counter()
    report = run(args)
    report["total_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"written {args.out / 'gpu_check.json'} in {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
