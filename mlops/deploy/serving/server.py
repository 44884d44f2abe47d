"""The HTTP runtime: a FastAPI app around one loaded model folder, scored through the micro-batcher.

The model is loaded before the app is built (so a bad folder fails the command at once); the app's
lifespan warms it up and starts the batcher, and on shutdown (SIGTERM) lets queued requests finish.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at runtime,
# and /predict's body model is built from the settings inside create_app.
import hmac
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlops.core.errors import MlopsError
from mlops.core.model_folder import LoadedModel, read_manifest, training_manifest
from mlops.core.multilabel import decide, label_sets_of
from mlops.deploy.serving.batching import MicroBatcher
from mlops.deploy.serving.drain import RETRY_AFTER_S, Drain, DrainExpired
from mlops.deploy.serving.metrics import ServerMetrics
from mlops.deploy.serving.schemas import ErrorResponse, PredictResponse, predict_request_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_texts: int = 256
    max_chars: int = 10_000
    max_upload_bytes: int = 100 * 1024 * 1024
    csv_chunk_rows: int = 1024
    api_key: str | None = None  # the secret itself; None: no authentication
    grace_seconds: float = 30.0  # after SIGTERM, how long held requests may take (see drain.py)


def _runtime_name(loaded: LoadedModel) -> str:
    module = loaded.info.get("module_path", "")
    if module.startswith("models.onnx_encoder"):
        return "onnx"
    return "scikit-learn" if module.startswith("models.tfidf_linear") else "torch"


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """What /info tells: labels, config, runtime, precision, and the manifest's data fingerprint and metrics."""
    manifest = read_manifest(loaded.directory)
    source = training_manifest(loaded.directory)
    runtime = loaded.model.runtime_info()
    try:
        version = metadata.version("textclf-mlops")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "labels": loaded.labels, "text_pair": loaded.needs_text_pair, "config_name": loaded.info.get("config_name"),
        "model_class": f"{loaded.info.get('module_path')}.{loaded.info.get('class_name')}",
        "runtime": _runtime_name(loaded), "precision": runtime.get("precision") or manifest.get("precision"),
        "model_dir": str(loaded.directory), "data_sha256": source.get("input_sha256"),
        "seed": source.get("seed"), "validation_metrics": _headline(source.get("validation_metrics")),
        "tool_version": version,
        **({"task": "multi_label", "thresholds": dict(zip(loaded.labels, loaded.thresholds or []))}
           if loaded.task.multi_label else {}),
    }


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if not metrics:
        return None
    return {k: metrics.get(k) for k in ("n", "accuracy", "macro_f1", "log_loss", "ece") if k in metrics}


def _auth(api_key: str | None):
    # Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a worker thread, two thread
    # hops per request that cost more than the work they do.
    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(401, detail={"error": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                                headers={"WWW-Authenticate": "Bearer"})
    return check


def _error(status: int, message: str, **extra) -> JSONResponse:
    """A JSON error body: what went wrong, and for a limit its name and value."""
    return JSONResponse({"error": message, **{k: v for k, v in extra.items() if v is not None}}, status_code=status)


class _MeasureAndLimit:
    """Pure ASGI middleware: every request's status and latency into the metrics (a streamed response when its
    last byte is sent), and CSV uploads over the size limit refused from their Content-Length before the body is
    read. (Starlette's ``@app.middleware`` wrapper costs a task and a stream per request.)"""

    def __init__(self, app, metrics: ServerMetrics, max_upload_bytes: int, drain: Drain) -> None:
        self.app, self.metrics, self.max_upload_bytes, self.drain = app, metrics, max_upload_bytes, drain

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, path, status = time.perf_counter(), scope["path"], 500

        async def record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length", b"") if path == "/predict/csv" else b""
            if self.drain.draining and path not in ("/health", "/ready", "/metrics"):
                await _shutting_down()(scope, receive, record_status)
            elif length.isdigit() and int(length) > self.max_upload_bytes:
                response = _error(413, f"upload of {int(length)} bytes is over the limit", limit="max_upload_bytes",
                                  value=self.max_upload_bytes)
                await response(scope, receive, record_status)
            else:
                await self.app(scope, receive, record_status)
        finally:
            self.metrics.observe(path, status, time.perf_counter() - started)


def _shutting_down() -> JSONResponse:
    response = _error(503, "the server is shutting down; retry on another instance", retry_after_s=RETRY_AFTER_S)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _install_middleware_and_handlers(app: FastAPI, settings: ServeSettings, metrics: ServerMetrics,
                                     drain: Drain) -> None:
    app.add_middleware(_MeasureAndLimit, metrics=metrics, max_upload_bytes=settings.max_upload_bytes, drain=drain)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [_error_entry(error) for error in exc.errors()]
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        limit = (first.get("ctx") or {}).get("max_length")
        return _error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}", value=limit,
                      limit="max_texts" if limit == settings.max_texts and "texts" in where else
                      "max_chars" if limit == settings.max_chars else None, size=first.get("size"), detail=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return _error(400, await _body_problem(request))
        body = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _printable(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, anything UTF-8 cannot carry (a lone surrogate) escaped, so an error
    body always encodes and stays small whatever the client sent (a field name can be a client's text too)."""
    text = text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_entry(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error as the client gets it: where, what and the limit, and the size of what was sent, but
    never the input itself (a 5 MB text would come back as a 5 MB error)."""
    entry = {"type": error.get("type"), "loc": [_printable(str(p)) if isinstance(p, str) else p
                                                 for p in error.get("loc", ())],
             "msg": _printable(str(error.get("msg", "")), limit=300)}
    if entry["type"] == "string_unicode":
        entry["msg"] += " (the JSON holds a lone UTF-16 surrogate such as \\ud800, which is not text)"
    ctx = {k: v for k, v in (error.get("ctx") or {}).items() if isinstance(v, (int, float, bool))}
    if ctx:
        entry["ctx"] = ctx
    if isinstance(error.get("input"), (str, list, dict, bytes)):
        entry["size"] = len(error["input"])
    return entry


async def _body_problem(request: Request) -> str:
    """Why a body could not be parsed, in words: for a body that is not UTF-8, where its first bad byte is."""
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"the body is not UTF-8: byte 0x{body[exc.start]:02x} at position {exc.start} cannot be decoded; "
                "send the JSON encoded as UTF-8")
    return "the body could not be parsed as JSON; send a JSON object such as {\"texts\": [\"...\"]}"


def _add_status_routes(app: FastAPI, state: dict[str, Any], info: dict[str, Any], metrics: ServerMetrics,
                       guarded: list) -> None:
    @app.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="The model is loaded and a warm-up prediction is done", dependencies=guarded)
    async def ready():
        if not state["ready"] or state["drain"].draining:
            return _error(503, "shutting down" if state["drain"].draining else "not ready")
        return {"status": "ready"}

    @app.get("/info", summary="The model: labels, config, runtime, data fingerprint, metrics", dependencies=guarded)
    async def get_info() -> dict[str, Any]:
        return info

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, dependencies=guarded)
    async def get_metrics():
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)


def _add_predict_routes(app: FastAPI, loaded: LoadedModel, settings: ServeSettings, state: dict[str, Any],
                        guarded: list) -> None:
    request_model = predict_request_model(settings.max_texts, settings.max_chars)

    async def batcher() -> MicroBatcher:
        if not state["ready"]:
            raise HTTPException(503, detail={"error": "the model is not ready yet (warming up or shutting down)"})
        return state["batcher"]

    @app.post("/predict", response_model=PredictResponse, dependencies=guarded,
              summary="Labels and per-class probabilities, one entry per text, in order")
    async def predict(body: request_model, scorer: MicroBatcher = Depends(batcher)):  # type: ignore[valid-type]
        texts = [body.text] if body.text is not None else list(body.texts)
        if (body.text_pairs is not None) != loaded.needs_text_pair:
            wanted = "'text_pairs' (this is a sentence-pair model)" if loaded.needs_text_pair else "no 'text_pairs'"
            return _error(422, f"send {wanted}")
        try:
            proba = await scorer.submit(texts, list(body.text_pairs) if body.text_pairs is not None else None)
        except MlopsError as exc:
            return _error(422, str(exc))
        except DrainExpired:
            return _shutting_down()
        labels = loaded.labels
        if loaded.task.multi_label:
            chosen = label_sets_of(decide(proba, loaded.thresholds), labels)
            body = {"predictions": [{"labels": list(chosen[i]),
                                     "probabilities": dict(zip(labels, map(float, row), strict=True))}
                                    for i, row in enumerate(proba)]}
        else:
            body = {"predictions": [{"label": labels[int(row.argmax())],
                                     "probabilities": dict(zip(labels, map(float, row), strict=True))} for row in proba]}
        # Encoded here: the body has PredictResponse's shape by construction, so FastAPI's validation and
        # re-serialisation through the response model would be pure per-request cost.
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.post("/predict/csv", dependencies=guarded, response_class=StreamingResponse,
              summary="A CSV upload labelled as predict-new would write it, streamed back")
    async def predict_csv(file: UploadFile = File(...), text_column: str = Form("text"),
                          text_pair_column: str | None = Form(None), scorer: MicroBatcher = Depends(batcher)):
        if file.size is not None and file.size > settings.max_upload_bytes:
            return _error(413, f"upload of {file.size} bytes is over the limit", limit="max_upload_bytes",
                          value=settings.max_upload_bytes)
        return await _stream_csv(loaded, file, text_column, text_pair_column or None, scorer, settings,
                                 state["drain"])


def create_app(loaded: LoadedModel, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The app serving ``loaded``; its lifespan warms the model up, runs the batcher and drains it at the end."""
    metrics = ServerMetrics()
    drain = Drain(settings.grace_seconds)
    state: dict[str, Any] = {"ready": False, "batcher": None, "drain": drain}
    info = model_info(loaded)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(loaded.predict_proba, max_batch_size=settings.max_batch_size,
                               max_wait_ms=settings.max_wait_ms, on_batch=metrics.batch_sizes.observe)
        metrics.queue_depth.set_function(lambda: batcher.queue_depth)
        batcher.start()
        drain.on_expiry(lambda: batcher.abort_queued(DrainExpired()))
        state["batcher"] = batcher
        # A full batch of mixed lengths, so whatever a model opens on its first large call (worker sessions,
        # buffers) is open before the first client's request.
        warm = [" ".join(["warm-up"] * (1 + i % 16)) for i in range(settings.max_batch_size)]
        await batcher.submit(warm, warm if loaded.needs_text_pair else None)
        state["ready"] = True
        logger.info("model %s ready (%s); micro-batches of up to %d texts, %g ms wait", info["config_name"],
                    info["runtime"], settings.max_batch_size, settings.max_wait_ms)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()  # queued requests are scored first

    app = FastAPI(title="textclf-mlops model server", version=info["tool_version"] or "dev", lifespan=lifespan,
                  responses={401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}})
    guarded = [Depends(_auth(settings.api_key))]
    app.state.drain = drain
    _install_middleware_and_handlers(app, settings, metrics, drain)
    _add_status_routes(app, state, info, metrics, guarded)
    _add_predict_routes(app, loaded, settings, state, guarded)
    return app


def _count_rows(handle) -> int:
    """Data rows of a CSV upload (quoted newlines counted right), read once before streaming; then rewound."""
    import csv

    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    try:
        rows = sum(1 for _ in csv.reader(text)) - 1  # less the header
    except (csv.Error, UnicodeDecodeError):
        rows = 0  # the parser below says what is wrong
    finally:
        text.detach()  # leave the upload open
    handle.seek(0)
    return max(rows, 0)


async def _stream_csv(loaded: LoadedModel, file: UploadFile, text_column: str, text_pair_column: str | None,
                      scorer: MicroBatcher, settings: ServeSettings, drain: Drain):
    import pandas as pd

    from mlops.deploy.prediction import label_chunk

    if (text_pair_column is not None) != loaded.needs_text_pair:
        return _error(422, "this is a sentence-pair model: send text_pair_column" if loaded.needs_text_pair
                      else "this model takes single texts: drop text_pair_column")
    total = await run_in_threadpool(_count_rows, file.file)
    try:
        reader = pd.read_csv(io.TextIOWrapper(file.file, encoding="utf-8", newline=""), dtype=str,
                             keep_default_na=False, na_values=[""], chunksize=settings.csv_chunk_rows)
        first = await run_in_threadpool(next, reader, None)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return _error(422, f"cannot read the upload as UTF-8 CSV: {exc}")
    if first is None or first.empty:
        return _error(422, "the upload has no data rows")
    missing = [c for c in (text_column, text_pair_column) if c is not None and c not in first.columns]
    if missing:
        return _error(422, f"column {missing[0]!r} not found in the upload; columns found: {list(first.columns)}. "
                           "Name the right one with the text_column (or text_pair_column) form field.")

    async def rows():
        chunk, header = first, True
        while chunk is not None:
            labelled = await drain.unless_expired(scorer.run_in_model_thread(
                lambda c=chunk: label_chunk(loaded, c, text_column, text_pair_column, settings.max_chars)))
            if labelled is None:  # the grace period is ending: the stream stops short of X-Row-Count
                logger.warning("a CSV stream was cut at shutdown, before all of its %d rows were sent", total)
                return
            yield labelled[0].to_csv(header=header, index=False)
            header = False
            chunk = await run_in_threadpool(next, reader, None)

    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": "attachment; filename=predictions.csv",
                                      "X-Row-Count": str(total)})
