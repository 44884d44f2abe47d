"""export-model and the ONNX Runtime prediction path, on a tiny BERT built locally (no network, no GPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.cli import generate_splits
from helpers.hf import build_tiny_bert, topic_data
from mlops.core.config import ModelConfig
from mlops.core.errors import DataError, ExperimentError, ModelError
from mlops.core.model_interface import FitContext
from mlops.core.text_dataset import TextDataset

LABELS = ["tech", "food", "sports"]


def encoder_config(model_dir: Path) -> ModelConfig:
    return ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                       model_name=str(model_dir), training_arguments={
                           "epochs": 6, "batch_size": 16, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                           "max_length": 16, "num_threads": 1, "precision": "fp32", "early_stopping_patience": None})


def train_folder(base: Path, folder: Path, pairs: bool = False) -> Path:
    from mlops.core.model_folder import write_model_descriptor
    from models.hf_encoder.model import HFEncoderClassifier

    texts, labels = topic_data(200, seed=1)
    second = topic_data(200, seed=2)[0] if pairs else None
    config = encoder_config(base)
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels, text_pairs=second), labels=LABELS,
                                            context=FitContext(seed=0, show_progress=False))
    folder.mkdir(parents=True)
    model.save(folder)
    write_model_descriptor(folder, "tiny", config, LABELS, text_pair=pairs)
    (folder / "manifest.json").write_text(json.dumps({"created_at": "test", "input_file": None}))
    return folder


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """runtime auto keeps torch on a GPU host; these tests are about the CPU choice."""
    monkeypatch.setattr("mlops.core.model_folder._gpu_present", lambda: False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    base = build_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "model")
    return train_folder(base, tmp_path_factory.mktemp("final") / "final_model")


@pytest.fixture
def model_dir(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "final_model"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    # long texts too, so truncation at max_length=16 is exercised
    texts, labels = topic_data(700, seed=7)
    texts = [t if i % 5 else f"{t} {t} {t}" for i, t in enumerate(texts)]
    path = tmp_path_factory.mktemp("data") / "rows.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def torch_proba(model_dir: Path, texts: list[str], pairs=None) -> np.ndarray:
    from mlops.core.model_folder import load_model_folder

    loaded = load_model_folder(model_dir, device="cpu")
    return loaded.model.predict_proba(TextDataset(texts, text_pairs=pairs))


def test_fp32_export_reproduces_the_torch_model(model_dir, data_file, tmp_path):
    from mlops.app import Application
    from mlops.deploy.export import export_model
    from models.onnx_encoder.model import OnnxEncoderClassifier

    result = export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    assert result.directory == model_dir / "onnx" and result.precision == "fp32"
    assert result.check["label_agreement"] == 1.0 and result.check["rows"] == 300
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["kind"] == "onnx_export" and manifest["source_model_dir"] == str(model_dir.resolve())
    assert not list(model_dir.glob(".*partial*"))

    texts = pd.read_csv(data_file).text.tolist()[:150]
    loaded = Application(tmp_path / "artifacts").load_model(model_dir)  # runtime auto: the export, on a CPU
    assert isinstance(loaded.model, OnnxEncoderClassifier)
    onnx = loaded.predict_proba(TextDataset(texts))
    from mlops.core.model_folder import load_model_folder

    torch_model = load_model_folder(model_dir, device="cpu").model
    np.testing.assert_allclose(onnx, torch_model.predict_proba(TextDataset(texts)), atol=1e-4)
    truncated = loaded.model.runtime_info()["truncated"]["predict"]
    assert truncated == torch_model.runtime_info()["truncated"]["predict"] > 0
    # batching does not change results
    np.testing.assert_allclose(loaded.predict_proba(TextDataset(texts[:7])), onnx[:7], atol=1e-5)
    assert loaded.predict_proba(TextDataset([])).shape == (0, len(LABELS))
    np.testing.assert_allclose(loaded.predict_proba(TextDataset(["", "   "])),
                               torch_model.predict_proba(TextDataset(["", "   "])), atol=1e-4)
    torch_loaded = Application(tmp_path / "artifacts").load_model(model_dir, "torch")
    assert type(torch_loaded.model).__name__ == "HFEncoderClassifier"


def test_int8_export_meets_its_agreement_on_held_back_rows(model_dir, data_file):
    from mlops.app import Application
    from mlops.deploy.export import export_model

    result = export_model(model_dir, precision="auto", data_file=data_file, rows=400, min_agreement=0.99)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert [a["precision"] for a in manifest["attempts"]][:2] == ["fp32", "int8"]
    assert manifest["smoothing_alpha"] == 0.8 and manifest["data_sha256"]
    assert manifest["attempts"][1]["tuning_half"]["rows"] == 200
    assert result.precision == "int8"  # deterministic: the tiny model passes at 99%
    assert result.check["rows"] == 200  # the half not used to pick the re-scoring margin
    assert result.check["label_agreement"] >= 0.99
    import onnx

    ops = {node.op_type for node in onnx.load(str(result.directory / "model.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    texts = topic_data(300, seed=99)[0]  # new rows, not in the export's data file
    loaded = Application(model_dir.parent / "artifacts").load_model(model_dir)
    labels = loaded.predict_proba(TextDataset(texts)).argmax(1)
    assert (labels == torch_proba(model_dir, texts).argmax(1)).mean() >= 0.98


def test_parallel_workers_give_the_single_session_result(model_dir, data_file):
    from mlops.deploy.export import export_model
    from mlops.core.model_folder import load_model_folder

    export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    texts = pd.read_csv(data_file).text.tolist()[:150]
    runtime = load_model_folder(model_dir / "onnx").model
    runtime._workers, runtime._worker_threads, runtime._batch_size = 1, 1, 7
    single = runtime.predict_proba(TextDataset(texts))
    runtime._workers = 3
    parallel = runtime.predict_proba(TextDataset(texts))
    assert len(runtime._sessions) == 3  # 22 batches shared out to three sessions
    np.testing.assert_allclose(parallel, single, atol=1e-6)
    assert runtime.predict_proba(TextDataset(texts[:1])).shape == (1, len(runtime.labels))


def test_rows_under_the_margin_are_rescored_in_fp32(model_dir, data_file):
    from mlops.deploy.export import export_model
    from mlops.core.model_folder import load_model_folder
    from models.onnx_encoder.model import open_session

    export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    texts = pd.read_csv(data_file).text.tolist()[:40]
    runtime = load_model_folder(model_dir / "onnx").model
    exact = runtime.predict_proba(TextDataset(texts))
    quantized = shutil.copy(model_dir / "onnx" / "model.onnx", model_dir / "q.onnx")
    from models.onnx_encoder.graph import quantize_int8

    quantize_int8(Path(quantized), model_dir / "q8.onnx")
    runtime._sessions, runtime._session_path = [open_session(model_dir / "q8.onnx", 1)], model_dir / "q8.onnx"
    int8 = runtime.predict_proba(TextDataset(texts))
    assert np.abs(int8 - exact).max() > 1e-5  # the int8 graph really differs
    runtime._rescore_session, runtime._rescore_below = open_session(model_dir / "onnx" / "model.onnx", 1), 1.01
    np.testing.assert_allclose(runtime.predict_proba(TextDataset(texts)), exact, atol=1e-6)  # every row re-scored
    assert runtime.runtime_info()["rescored_rows"] == len(texts)


def test_cascade_takes_uncertain_rows_from_fp32():
    from models.onnx_encoder.graph import cascade, top_two_margin

    int8 = np.array([[0.52, 0.48], [0.9, 0.1], [0.2, 0.3, 0.5]][:2])
    fp32 = np.array([[0.45, 0.55], [0.95, 0.05]])
    np.testing.assert_allclose(top_two_margin(int8), [0.04, 0.8])
    np.testing.assert_allclose(cascade(int8, fp32, 0.05), [[0.45, 0.55], [0.9, 0.1]])
    np.testing.assert_allclose(cascade(int8, fp32, 0.0), int8)
    np.testing.assert_allclose(top_two_margin(np.array([[0.2, 0.3, 0.5]])), [0.2])


def test_sentence_pair_models_export_too(tmp_path, data_file):
    from mlops.deploy.export import export_model
    from mlops.core.model_folder import load_model_folder

    base = build_tiny_bert(tmp_path / "base")
    folder = train_folder(base, tmp_path / "pairs", pairs=True)
    first = pd.read_csv(data_file).text.tolist()
    rows = tmp_path / "pairs.csv"
    pd.DataFrame({"a": first, "b": first[::-1]}).to_csv(rows, index=False)
    with pytest.raises(ExperimentError, match="--text-pair-column"):
        export_model(folder, precision="fp32", data_file=rows, text_column="a", rows=300)
    export_model(folder, precision="fp32", data_file=rows, text_column="a", text_pair_column="b", rows=300)
    runtime = load_model_folder(folder / "onnx")
    np.testing.assert_allclose(runtime.predict_proba(TextDataset(first[:30], text_pairs=first[::-1][:30])),
                               torch_proba(folder, first[:30], first[::-1][:30]), atol=1e-4)


def test_export_refuses_bad_requests_and_leaves_nothing_behind(model_dir, data_file, tmp_path):
    from mlops.deploy.export import export_model

    with pytest.raises(ExperimentError, match="--data-file"):
        export_model(model_dir, precision="fp32")  # the manifest names no training file
    small = tmp_path / "small.csv"
    pd.read_csv(data_file).head(100).to_csv(small, index=False)
    with pytest.raises(DataError, match="at least"):
        export_model(model_dir, precision="fp32", data_file=small)
    with pytest.raises(DataError, match="--text-column"):
        export_model(model_dir, precision="fp32", data_file=data_file, text_column="body")
    with pytest.raises(ExperimentError, match="min-agreement"):
        export_model(model_dir, data_file=data_file, min_agreement=1.5)
    assert not (model_dir / "onnx").exists()
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["final_model", "small.csv"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")

    export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    with pytest.raises(ExperimentError, match="already exists"):
        export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    with pytest.raises(ExperimentError, match="would contain the model folder"):
        export_model(model_dir, output_dir=model_dir, force=True, data_file=data_file)
    with pytest.raises(ExperimentError, match="not an ONNX export"):  # --force never deletes other folders
        export_model(model_dir, output_dir=tmp_path / "elsewhere", force=True, data_file=data_file)
    assert (tmp_path / "elsewhere" / "notes.txt").exists() and (model_dir / "model.safetensors").exists()


def test_a_failing_export_leaves_nothing_behind(model_dir, data_file, monkeypatch):
    from mlops.deploy.export import export_model

    def broken(*_args, **_kwargs):
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr("models.onnx_encoder.graph.quantize_int8", broken)
    with pytest.raises(ModelError, match="quantizer crashed"):
        export_model(model_dir, precision="int8", data_file=data_file, rows=300)
    assert not (model_dir / "onnx").exists() and not list(model_dir.glob(".onnx*"))


def test_tfidf_models_have_no_onnx_export(tmp_path, data_file):
    from mlops.deploy.export import export_model
    from mlops.core.model_folder import write_model_descriptor
    from models.tfidf_linear.model import TfidfLinearClassifier

    config = ModelConfig(module_path="models.tfidf_linear.model", class_name="TfidfLinearClassifier")
    frame = pd.read_csv(data_file)
    model = TfidfLinearClassifier(config).fit(TextDataset(frame.text.tolist(), frame.label.tolist()), labels=LABELS)
    folder = tmp_path / "tfidf"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tfidf", config, LABELS)
    with pytest.raises(ModelError, match="no ONNX export"):
        export_model(folder, data_file=data_file)
    assert not (folder / "onnx").exists()


def test_runtime_choice(model_dir, data_file, tmp_path, caplog):
    from mlops.app import Application
    from mlops.core.model_folder import runtime_folder
    from mlops.deploy.export import export_model

    with pytest.raises(ExperimentError, match="no ONNX export"):
        runtime_folder(model_dir, "onnx", None)
    assert runtime_folder(model_dir, "auto", None) == model_dir
    export_model(model_dir, precision="fp32", data_file=data_file, rows=300)
    assert runtime_folder(model_dir, "auto", "cpu") == model_dir / "onnx"
    assert runtime_folder(model_dir, "auto", "cuda:0") == model_dir  # a GPU asked for: the torch model
    assert runtime_folder(model_dir / "onnx", "auto", None) == model_dir / "onnx"
    with pytest.raises(ExperimentError, match="is an ONNX export"):
        runtime_folder(model_dir / "onnx", "torch", None)
    with pytest.raises(ExperimentError, match="run on the CPU"):
        runtime_folder(model_dir, "onnx", "cuda")
    # retraining into the folder (a new manifest) makes the old export stale: it is ignored, not used
    (model_dir / "manifest.json").write_text(json.dumps({"created_at": "later"}))
    assert runtime_folder(model_dir, "auto", None) == model_dir
    assert "different model" in caplog.text
    loaded = Application(tmp_path / "artifacts").load_model(model_dir)
    assert type(loaded.model).__name__ == "HFEncoderClassifier"


def test_cli_export_and_predict_text(model_dir, data_file, cli):
    result = cli("export-model", "--model-path", str(model_dir), "--data-file", str(data_file), "--rows", "300",
                 "--precision", "fp32")
    assert "ONNX export (fp32)" in result.output and "100.00% of 300" in result.output
    text = cli("predict-new", "--model-path", str(model_dir), "--text", "the football coach and the team")
    torch_text = cli("predict-new", "--model-path", str(model_dir), "--runtime", "torch", "--text",
                     "the football coach and the team")
    def label(result):
        return result.output.strip().splitlines()[-1].split()[0]

    assert label(text) == label(torch_text) in LABELS
    again = cli("export-model", "--model-path", str(model_dir), "--data-file", str(data_file), expect=3)
    assert "already exists" in again.output and "Traceback" not in again.output
    missing = cli("predict-new", "--model-path", str(model_dir), "--runtime", "onnx", "--device", "cuda",
                  "--text", "x", expect=3)
    assert "CPU" in missing.output


#: Runs the CLI in a fresh process, then prints which heavy libraries the command imported.
_IMPORTS_OF = """
import sys, main
try:
    main.app(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, stop.code
print(sorted(m for m in ("torch", "transformers", "scipy", "sklearn", "pandas", "matplotlib") if m in sys.modules))
"""


def test_predict_text_on_an_export_imports_no_training_or_statistics_library(model_dir, data_file):
    """One-text prediction on the CPU runs the export through onnxruntime and tokenizers alone (a fast start)."""
    import subprocess
    import sys

    from mlops.deploy.export import export_model

    export_model(model_dir, data_file=data_file, rows=300, precision="fp32")
    root = Path(__file__).resolve().parent.parent
    command = ["predict-new", "--model-path", str(model_dir), "--runtime", "onnx", "--text", "the football coach"]
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF, *command], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_worker_layout_defaults():
    from models.onnx_encoder.model import OnnxEncoderArguments

    assert OnnxEncoderArguments().layout(2) == (2, 1, 16)  # one single-thread session per core
    assert OnnxEncoderArguments().layout(16) == (4, 4, 64)  # at most 4 copies of the weights
    assert OnnxEncoderArguments(workers=1).layout(2) == (1, 2, 64)
    assert OnnxEncoderArguments(num_threads=1, workers=3).layout(8) == (1, 1, 16)  # never more workers than threads
    assert OnnxEncoderArguments(batch_size=5).layout(2) == (2, 1, 5)


def test_train_final_model_writes_the_checked_export_by_itself(cli, artifacts, tmp_path):
    from mlops.core.model_folder import export_for, runtime_folder

    texts, labels = topic_data(420, seed=3)
    data = tmp_path / "topics.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(data, index=False)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**encoder_config(build_tiny_bert(tmp_path / "bert")).model_dump(mode="json"),
                                  "description": "tiny"}))
    generate_splits(cli, "auto", data, folds=2)
    result = cli("train-final-model", "--experiment-id", "auto", "--model-config-name", str(config))
    model_dir = artifacts / "experiments" / "auto" / "runs" / "tiny" / "final_model"
    assert "ONNX export" in result.output
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["export"]["directory"] == "onnx" and manifest["export"]["check"]["label_agreement"] >= 0.995
    from mlops.deploy.export import AFTER_TRAINING_CHECK_ROWS  # the quick check, not export-model's 4,000

    assert json.loads((model_dir / "onnx" / "manifest.json").read_text())["requested_check_rows"] == \
        AFTER_TRAINING_CHECK_ROWS
    # recording the export in the manifest does not make the export look stale
    assert export_for(model_dir) == model_dir / "onnx"
    assert runtime_folder(model_dir, "auto", None) == model_dir / "onnx"
    cli("train-final-model", "--experiment-id", "auto", "--model-config-name", str(config), "--force", "--no-export")
    assert not (model_dir / "onnx").exists() and "export" not in json.loads((model_dir / "manifest.json").read_text())
