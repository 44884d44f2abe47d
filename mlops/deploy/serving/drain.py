"""Shutting down under load: what SIGTERM does to the requests a server holds.

At SIGTERM the server stops taking work at once (new requests get 503 with ``Retry-After``, ``/ready`` turns
false; a second later uvicorn stops accepting connections) and lets what it holds finish within the grace period
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
#: After SIGTERM the server keeps its connections this long, answering new requests 503 with Retry-After,
#: before uvicorn closes the idle ones: a request already on its way then gets an answer, not a reset.
REFUSAL_WINDOW_S = 1.0


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

    async def unless_expired(self, awaitable, poll_s: float = 0.1):
        """``awaitable``'s result, or None once the grace period is about to end (the work itself, a model call
        on its thread, is left to finish in the background)."""
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            if self.expired:
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nothing left unretrieved
                return None
            await asyncio.wait({task}, timeout=poll_s)
        return task.result()

    def _expire(self) -> None:
        self.expired = True
        for callback in self._on_expiry:
            callback()


def run_server(app, drain: Drain, *, host: str, port: int, log_level: str) -> None:
    """uvicorn until SIGTERM or Ctrl-C, then the drain above before it exits."""
    import uvicorn

    window = min(REFUSAL_WINDOW_S, drain.grace_seconds / 4)

    class _DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if drain.draining:  # a second signal: no more waiting
                super().handle_exit(sig, frame)
                return
            loop = asyncio.get_event_loop()
            drain.begin(loop)
            loop.call_soon_threadsafe(loop.call_later, window, super().handle_exit, sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=drain.grace_seconds - window)
    _DrainingServer(config).run()
