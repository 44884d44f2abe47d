"""Data-parallel fine-tuning under a torchrun-style launch: two CPU processes over gloo."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from helpers.hf import build_tiny_bert, topic_data

pytestmark = pytest.mark.slow  # two training processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model_dir: str) -> tuple[np.ndarray, dict]:
    import torch

    from mlops.core.config import ModelConfig
    from mlops.core.model_interface import FitContext
    from mlops.core.text_dataset import TextDataset
    from models.hf_encoder.model import HFEncoderClassifier

    texts, labels = topic_data(96, seed=1)
    config = ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                         model_name=model_dir,
                         training_arguments={"epochs": 2, "batch_size": 8, "learning_rate": 5e-3,
                                             "early_stopping_patience": None, "num_threads": 1,
                                             "precision": "fp32"})
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels), labels=sorted(set(labels)),
                                            context=FitContext(seed=3, show_progress=False))
    return torch.cat([p.detach().flatten() for p in model._model.parameters()]).numpy(), model.runtime_info()


def _worker(rank: int, world: int, port: int, model_dir: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch.distributed as dist

    weights, info = _train(model_dir)
    np.save(Path(out_dir) / f"rank{rank}.npy", weights)
    np.save(Path(out_dir) / f"info{rank}.npy", np.asarray([info["distributed"]["world_size"]]))
    dist.destroy_process_group()


def test_two_ranks_train_shares_and_stay_in_sync(tmp_path):
    import torch.multiprocessing as mp

    model_dir = build_tiny_bert(tmp_path / "tiny")
    single, info = _train(str(model_dir))
    assert "distributed" not in info
    mp.start_processes(_worker, args=(2, _free_port(), str(model_dir), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert np.load(tmp_path / "info0.npy")[0] == 2
    np.testing.assert_array_equal(rank0, rank1)  # gradients were all-reduced every step
    # Each rank trained on half the batches with averaged gradients, not on everything alone:
    assert rank0.shape == single.shape and not np.allclose(rank0, single)
