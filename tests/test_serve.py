"""`cli serve` for real: uvicorn in a subprocess on a free loopback port, driven with httpx."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from helpers.hf import build_tiny_bert, topic_data

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "s3cret-test-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``cli serve`` in a subprocess; stopped with SIGTERM (then killed) when the test module ends."""

    def __init__(self, model: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(model.parent / f"server-{self.port}.log", "w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "serve", "--model-path", str(model), "--port", str(self.port),
             *options], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    headers = {"Authorization": f"Bearer {API_KEY}"}
                    if httpx.get(f"{self.url}/ready", headers=headers, timeout=1).status_code == 200:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from main import app

    base = tmp_path_factory.mktemp("serve")
    frame = pd.read_csv(ROOT / "data" / "sample" / "mr_sample.csv").sample(400, random_state=0)
    frame.to_csv(base / "train.csv", index=False)
    runner = CliRunner()
    for args in (["generate-splits", "--experiment-id", "s", "--input-file", str(base / "train.csv"), "--cv-folds",
                  "2"], ["train-final-model", "--experiment-id", "s", "--model-config-name", "tfidf_logreg"]):
        result = runner.invoke(app, [*args, "--artifacts-dir", str(base / "art")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return base / "art" / "experiments" / "s" / "runs" / "tfidf_logreg" / "final_model"


@pytest.fixture(scope="module")
def encoder_model(tmp_path_factory) -> Path:
    from mlops.core.model_folder import write_model_descriptor
    from mlops.core.config import ModelConfig
    from mlops.core.model_interface import FitContext
    from mlops.core.text_dataset import TextDataset
    from models.hf_encoder.model import HFEncoderClassifier

    base = tmp_path_factory.mktemp("serve_encoder")
    config = ModelConfig(module_path="models.hf_encoder.model", class_name="HFEncoderClassifier",
                         model_name=str(build_tiny_bert(base / "bert")),
                         training_arguments={"epochs": 4, "batch_size": 16, "learning_rate": 5e-3, "max_length": 16,
                                             "num_threads": 1, "precision": "fp32", "warmup_ratio": 0.0})
    texts, labels = topic_data(120, seed=1)
    model = HFEncoderClassifier(config).fit(TextDataset(texts, labels), labels=["food", "sports", "tech"],
                                            context=FitContext(seed=0, show_progress=False))
    folder = base / "model"
    folder.mkdir()
    model.save(folder)
    write_model_descriptor(folder, "tiny", config, ["food", "sports", "tech"])
    return folder


@pytest.fixture(scope="module")
def tfidf_server(tfidf_model):
    server = Server(tfidf_model, "--max-texts", "8", "--max-chars", "300", "--max-upload-mb", "0.01",
                    "--max-wait-ms", "20")
    yield server
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once it has shut down cleanly


@pytest.fixture(scope="module")
def encoder_server(encoder_model):
    server = Server(encoder_model, "--max-batch-size", "16")
    yield server
    server.stop()


def _predict_new(model: Path, texts: list[str], tmp_path: Path) -> pd.DataFrame:
    from typer.testing import CliRunner

    from main import app

    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(source, index=False)
    result = CliRunner().invoke(app, ["predict-new", "--model-path", str(model), "--input-file", str(source),
                                      "--output-file", str(out), "--runtime", "torch"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out)


def test_health_ready_info_metrics(tfidf_server, tfidf_model):
    assert httpx.get(f"{tfidf_server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{tfidf_server.url}/ready").json() == {"status": "ready"}
    info = httpx.get(f"{tfidf_server.url}/info").json()
    manifest = json.loads((tfidf_model / "manifest.json").read_text())
    assert info["labels"] == ["negative", "positive"] and info["config_name"] == "tfidf_logreg"
    assert info["runtime"] == "scikit-learn" and info["data_sha256"] == manifest["input_sha256"]
    assert info["validation_metrics"]["accuracy"] == pytest.approx(manifest["validation_metrics"]["accuracy"])
    assert info["tool_version"]
    httpx.post(f"{tfidf_server.url}/predict", json={"text": "fine"})
    metrics = httpx.get(f"{tfidf_server.url}/metrics").text
    for name in ("mlops_requests_total", "mlops_request_errors_total", "mlops_request_latency_seconds_bucket",
                 "mlops_batch_size_texts_bucket", "mlops_queue_depth_texts"):
        assert name in metrics, name
    assert 'mlops_requests_total{endpoint="/predict",status="200"}' in metrics


@pytest.mark.parametrize("server_name", ["tfidf", "encoder"])
def test_predict_equals_predict_new(server_name, tfidf_server, encoder_server, tfidf_model, encoder_model, tmp_path):
    server, model = (tfidf_server, tfidf_model) if server_name == "tfidf" else (encoder_server, encoder_model)
    texts = ["a wonderful, moving film", "dull and far too long", "the football match", "a new laptop chip",
             "pasta for dinner", "ok"]
    answer = httpx.post(f"{server.url}/predict", json={"texts": texts}).json()["predictions"]
    expected = _predict_new(model, texts, tmp_path)
    assert [p["label"] for p in answer] == expected["predicted_label"].tolist()
    labels = list(answer[0]["probabilities"])
    got = np.array([[p["probabilities"][label] for label in labels] for p in answer])
    np.testing.assert_allclose(got, expected[[f"proba_{label}" for label in labels]].to_numpy(), atol=1e-5)
    single = httpx.post(f"{server.url}/predict", json={"text": texts[0]}).json()["predictions"]
    assert len(single) == 1 and single[0]["label"] == answer[0]["label"]


def test_csv_upload_returns_what_predict_new_writes(tfidf_server, tfidf_model, tmp_path):
    texts = [f"review number {i}: {'great' if i % 2 else 'awful'} acting" for i in range(40)]
    expected = _predict_new(tfidf_model, texts, tmp_path)
    upload = (tmp_path / "in.csv").read_bytes()
    response = httpx.post(f"{tfidf_server.url}/predict/csv", files={"file": ("in.csv", upload, "text/csv")},
                          data={"text_column": "text"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.text == (tmp_path / "out.csv").read_text()
    got = pd.read_csv(io.StringIO(response.text))
    assert got["predicted_label"].tolist() == expected["predicted_label"].tolist()
    wrong = httpx.post(f"{tfidf_server.url}/predict/csv", files={"file": ("in.csv", upload, "text/csv")},
                       data={"text_column": "Sentence"})
    assert wrong.status_code == 422 and "Sentence" in wrong.json()["error"] and "columns found" in wrong.json()["error"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"texts": ["x"] * 9}, 422, "max_texts"),
    ({"texts": ["x" * 301]}, 422, "max_chars"),
    ({"text": "x" * 301}, 422, "max_chars"),
    ({"texts": []}, 422, "at least 1"),
    ({"texts": "not a list"}, 422, "texts"),
    ({"texts": [1, 2]}, 422, "string"),
    ({"texts": ["a"], "unknown": 1}, 422, "Extra inputs"),
    ({}, 422, "exactly one"),
    ({"text": "a", "texts": ["b"]}, 422, "exactly one"),
    ({"texts": ["a"], "text_pairs": ["b"]}, 422, "text_pairs"),
])
def test_limits_and_bad_bodies_are_4xx_with_a_json_error(tfidf_server, body, status, needle):
    response = httpx.post(f"{tfidf_server.url}/predict", json=body)
    assert response.status_code == status
    payload = response.json()
    assert needle in json.dumps(payload), payload
    assert payload["error"]


def test_malformed_json_and_big_uploads(tfidf_server):
    response = httpx.post(f"{tfidf_server.url}/predict", content=b"{bad json", headers={"content-type":
                                                                                        "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]
    big = b"text\n" + b"y" * 20_000 + b"\n"
    response = httpx.post(f"{tfidf_server.url}/predict/csv", files={"file": ("big.csv", big, "text/csv")})
    assert response.status_code == 413
    assert response.json() == {"error": response.json()["error"], "limit": "max_upload_bytes", "value": 10485}
    assert httpx.get(f"{tfidf_server.url}/nowhere").status_code == 404


def test_validation_errors_name_the_field_limit_and_size_and_never_echo_the_input(tfidf_server):
    """A 5 MB text or a 100k-item list comes back as a short error, not as itself; a lone surrogate is no 500."""
    long_text = httpx.post(f"{tfidf_server.url}/predict", json={"texts": ["y" * 200_000]})
    assert long_text.status_code == 422 and len(long_text.content) < 2_000, len(long_text.content)
    error = long_text.json()
    assert "y" * 50 not in long_text.text
    assert error["limit"] == "max_chars" and error["value"] == 300 and error["size"] == 200_000
    many = httpx.post(f"{tfidf_server.url}/predict", json={"texts": ["z"] * 100_000})
    assert many.status_code == 422 and len(many.content) < 2_000 and many.json()["size"] == 100_000
    surrogate = httpx.post(f"{tfidf_server.url}/predict", content=b'{"texts": ["\\ud800"]}',
                           headers={"content-type": "application/json"})
    assert surrogate.status_code == 422, surrogate.text
    assert "surrogate" in surrogate.json()["error"] or "UTF-8" in surrogate.json()["error"]


def test_a_body_that_is_not_utf8_is_a_400_that_says_so(tfidf_server):
    response = httpx.post(f"{tfidf_server.url}/predict", content='{"texts": ["café"]}'.encode("latin-1"),
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"] and "byte 0xe9" in response.json()["error"], response.text


@pytest.mark.slow
def test_two_hundred_concurrent_requests_are_all_answered_right(encoder_server):
    texts, _ = topic_data(200, seed=9)
    reference = httpx.post(f"{encoder_server.url}/predict", json={"texts": texts[:100]}).json()["predictions"]
    reference += httpx.post(f"{encoder_server.url}/predict", json={"texts": texts[100:]}).json()["predictions"]

    async def hammer():
        async with httpx.AsyncClient(base_url=encoder_server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", json={"text": t}) for t in texts))

    answers = asyncio.run(hammer())
    assert all(a.status_code == 200 for a in answers)
    labels = [a.json()["predictions"][0]["label"] for a in answers]
    assert labels == [r["label"] for r in reference]
    for answer, ref in zip(answers, reference, strict=True):
        got = answer.json()["predictions"][0]["probabilities"]
        assert got == pytest.approx(ref["probabilities"], abs=1e-5)
    metrics = httpx.get(f"{encoder_server.url}/metrics").text
    batches = [line for line in metrics.splitlines() if line.startswith("mlops_batch_size_texts_count")]
    assert batches and float(batches[0].split()[-1]) < 200  # requests were scored together


def test_api_key(tfidf_model):
    server = Server(tfidf_model, "--api-key-env", "TEST_API_KEY", env={"TEST_API_KEY": API_KEY})
    try:
        assert httpx.get(f"{server.url}/health").status_code == 200  # open: for load balancers
        for path in ("/ready", "/info", "/metrics"):
            assert httpx.get(f"{server.url}{path}").status_code == 401
        wrong = httpx.post(f"{server.url}/predict", json={"text": "a"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = httpx.post(f"{server.url}/predict", json={"text": "a"},
                           headers={"Authorization": f"Bearer {API_KEY}"})
        assert right.status_code == 200
    finally:
        server.stop()


def test_api_key_env_that_is_not_set_is_a_clear_error(tfidf_model):
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "serve", "--model-path", str(tfidf_model),
                             "--api-key-env", "SURELY_NOT_SET_ANYWHERE", "--port", str(_free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SURELY_NOT_SET_ANYWHERE" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(tfidf_model):
    """Requests the server holds when SIGTERM comes are answered; it then exits cleanly."""
    server = Server(tfidf_model, "--max-wait-ms", "3000", "--max-batch-size", "64")

    async def requests_then_sigterm():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            pending = [asyncio.create_task(client.post("/predict", json={"text": f"film {i}"})) for i in range(30)]
            for _ in range(200):  # until all 30 wait in the batcher for the batch to fill
                metrics = (await client.get("/metrics")).text
                if "mlops_queue_depth_texts 30.0" in metrics:
                    break
                await asyncio.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*pending)

    try:
        answers = asyncio.run(requests_then_sigterm())
        assert [a.status_code for a in answers] == [200] * 30
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()
    finally:
        server.stop()


@pytest.mark.slow
def test_sigterm_under_load_gives_no_500_and_a_cut_stream_is_detectable(tfidf_model, tmp_path, mr_rows):
    """3 uploads of 40k rows and 57 /predict calls, then SIGTERM with a 5 s grace: each request is answered 200
    or 503 with Retry-After, a stream cut short carries fewer rows than its X-Row-Count, nothing crashes."""
    rows = pd.concat([mr_rows] * 14).head(40_000)
    upload = rows[["text"]].to_csv(index=False).encode()
    server = Server(tfidf_model, "--grace-seconds", "5", "--max-upload-mb", "50")

    async def load_then_sigterm():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            uploads = [asyncio.create_task(client.post("/predict/csv", files={"file": ("in.csv", upload, "text/csv")}))
                       for _ in range(3)]
            await asyncio.sleep(0.5)
            calls = [asyncio.create_task(client.post("/predict", json={"texts": [f"film {i}"] * 8}))
                     for i in range(57)]
            await asyncio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            try:
                late = await client.post("/predict", json={"text": "after the signal"})
            except httpx.TransportError:
                late = None  # the listening socket is already closed: refused, which is fine too
            return (await asyncio.gather(*uploads, return_exceptions=True),
                    await asyncio.gather(*calls, return_exceptions=True), late)

    try:
        uploads, calls, late = asyncio.run(load_then_sigterm())
        for answer in calls:
            assert not isinstance(answer, Exception), answer
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 503:
                assert answer.headers["Retry-After"] and "shutting down" in answer.json()["error"]
        assert late is None or (late.status_code == 503 and late.headers["Retry-After"])
        for answer in uploads:
            assert not isinstance(answer, Exception), (answer, server.output()[-4000:])
            if answer.status_code == 503:
                continue  # refused whole, with Retry-After
            assert answer.status_code == 200
            declared = int(answer.headers["X-Row-Count"])
            received = len(pd.read_csv(io.StringIO(answer.text))) if answer.text else 0
            assert declared == 40_000 and received <= declared
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        log = server.output()
        assert "Traceback" not in log and " 500 " not in log, log[-3000:]
    finally:
        server.stop()


@pytest.mark.slow
def test_openapi_fuzz_finds_no_server_error(tfidf_server):
    """Schema-driven requests (valid and invalid bodies) to every operation: never a 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{tfidf_server.url}/openapi.json")
    checked = []
    modes = list(schemathesis.GenerationMode)  # positive (valid) and negative (schema-violating) bodies
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=modes[0]) | operation.as_strategy(generation_mode=modes[-1]))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call()
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"

        check()
        checked.append(operation.label)
    assert {"POST /predict", "POST /predict/csv", "GET /info"} <= set(checked)
