"""Shared fixtures. The suite never touches the network: any hub download attempt fails."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from mlops.core.runtime import configure_openmp

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLOPS_ARTIFACTS_DIR", None)
configure_openmp()  # as the CLI does, before torch is first imported

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT_ROOT / "data" / "sample" / "mr_sample.csv"


@pytest.fixture(scope="session")
def mr_rows() -> pd.DataFrame:
    return pd.read_csv(SAMPLE)


@pytest.fixture
def small_csv(tmp_path: Path, mr_rows: pd.DataFrame) -> Path:
    """240 real MR sentences, balanced, in the original design's column names."""
    frame = pd.concat([mr_rows[mr_rows.label == label].head(120) for label in ("negative", "positive")])
    frame = frame.sample(frac=1.0, random_state=0).rename(columns={"text": "Sentence", "label": "Sentiment"})
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def cli(artifacts: Path):
    """Invoke the real CLI in-process; returns the click Result."""
    from typer.testing import CliRunner

    from main import app

    runner = CliRunner()

    def invoke(*args: str, artifacts_dir: Path | None = artifacts, expect: int | None = 0):
        argv = list(args)
        if artifacts_dir is not None and args:  # every command takes --artifacts-dir
            argv += ["--artifacts-dir", str(artifacts_dir)]
        result = runner.invoke(app, argv, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}, output:\n{result.output}"
        return result

    return invoke


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray instance for the whole test run (2 CPUs, no dashboard), always shut down."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # read when ray is imported
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT and its tokenizer (tests/helpers/hf.py), built once per run."""
    from helpers.hf import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "model")


@pytest.fixture(scope="session")
def topics():
    """320 topic sentences split 200 / 60 / 60 into train, val and test."""
    from helpers.hf import topic_data

    from mlops.core.text_dataset import TextDataset

    texts, labels = topic_data(320, seed=1)
    return {
        "train": TextDataset(texts[:200], labels[:200]),
        "val": TextDataset(texts[200:260], labels[200:260]),
        "test": TextDataset(texts[260:], labels[260:]),
    }
