"""Shutting down under load: what SIGTERM does to the requests a server holds.

At SIGTERM the server stops taking work at once (new requests get 503 with ``Retry-After``, ``/ready`` turns
false, uvicorn stops accepting connections) and lets what it holds finish within the grace period
(``serve --grace-seconds``). Shortly before the grace period ends, whatever is still queued is aborted
cleanly: a ``/predict`` still waiting gets 503 with ``Retry-After`` (never a 500), and a CSV stream stops
between chunks, so it carries fewer rows than its ``X-Row-Count`` header declared, which the client can see.
"""

from __future__ import annotations

import asyncio
import time

#: Seconds of the grace period kept for the aborted requests' answers and the server's own shutdown.
ABORT_MARGIN_S = 2.0
#: What a client is told to wait before it retries on another instance (or this one, restarted).
RETRY_AFTER_S = 5


class DrainExpired(Exception):
    """The grace period is (nearly) over: this request was aborted without being scored."""


class Drain:
    """The shutdown state of one server: set by the signal, read by the middleware, routes and streams."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.started: float | None = None
        self.expired = False
        self._on_expiry: list = []

    @property
    def draining(self) -> bool:
        return self.started is not None

    def on_expiry(self, callback) -> None:
        """Call ``callback()`` (in the event loop) when the grace period is about to end."""
        self._on_expiry.append(callback)

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start draining now (from the signal handler, on the loop's thread)."""
        if self.started is not None:
            return
        self.started = time.monotonic()
        loop.call_later(max(0.0, self.grace_seconds - ABORT_MARGIN_S), self._expire)

    def _expire(self) -> None:
        self.expired = True
        for callback in self._on_expiry:
            callback()


def run_server(app, drain: Drain, *, host: str, port: int, log_level: str) -> None:
    """uvicorn until SIGTERM or Ctrl-C, then the drain above before it exits."""
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            drain.begin(asyncio.get_event_loop())
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=drain.grace_seconds)
    _DrainingServer(config).run()
