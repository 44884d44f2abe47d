"""bench/gpu_check.sh: ready for a GPU machine, checked here for syntax and on the CPU fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.hf import write_tiny_encoder_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_shell_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], check=True)


def test_without_a_gpu_it_says_so_and_stops(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "no CUDA device" in done.stdout
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_the_cpu_plumbing_check_runs_every_step(tmp_path):
    config = write_tiny_encoder_config(tmp_path / "tiny.json", tmp_path / "bert",
                                       training_arguments={"epochs": 1, "early_stopping_patience": None})
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "out"),
                           "--allow-cpu", "--model-config", str(config), "--rows", "240", "--skip-llm"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["backtest"]["same_seed_same_metrics"] is True
    assert report["training"]["samples_per_s"] > 0 and report["final_models"]["bf16"]["precision"] == "fp32"
    assert report["serve"]["agrees_with_predict_new"] is True and report["predict"]["rows"] == 300
    assert report["ddp_one_gpu"]["exit_code"] == 0 and report["ddp_one_gpu"]["world_size"] == [1, 1]
