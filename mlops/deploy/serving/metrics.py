"""Prometheus metrics of one server: requests, errors, latency, batch sizes and queue depth."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
KNOWN_PATHS = {"/health", "/ready", "/info", "/metrics", "/predict", "/predict/csv", "/docs", "/openapi.json"}


class ServerMetrics:
    """A registry of its own (not the process-wide default), so several apps in one process do not clash."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mlops_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.errors = Counter("mlops_request_errors", "HTTP requests answered 4xx or 5xx", ["endpoint", "status"],
                              registry=self.registry)
        self.latency = Histogram("mlops_request_latency_seconds", "Time from request to response", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_sizes = Histogram("mlops_batch_size_texts", "Texts scored together in one model call",
                                     buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("mlops_queue_depth_texts", "Texts waiting for or in a model call",
                                 registry=self.registry)

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in KNOWN_PATHS else "other"  # unknown paths must not grow the label set
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
