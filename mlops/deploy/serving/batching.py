"""Micro-batching: concurrent requests are queued and scored together on the one thread that owns the model.

Each request's texts wait at most ``max_wait_ms`` for others to join (only under concurrent load: when
the last batch held one request and nothing else is queued, a lone client is scored at once, since
waiting could only add latency); a batch is cut at
``max_batch_size`` texts (a request larger than that is scored alone, in one call). Inference runs
in a single worker thread, so the event loop never blocks on it and the model is never used by two
threads at once; the CSV endpoint submits its chunks to the same thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.core.text_dataset import TextDataset


@dataclass
class _Pending:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Collects requests into batches and scores them with ``predict(TextDataset) -> (n, k) array``."""

    def __init__(self, predict: Callable[[TextDataset], np.ndarray], *, max_batch_size: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, found {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, found {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._carry: _Pending | None = None
        self._last_batch_requests = 0
        self._in_flight = 0

    @property
    def queue_depth(self) -> int:
        """Texts waiting or being scored."""
        return self._in_flight

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Score everything already queued, then stop the collector and the model thread."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._in_flight += len(texts)
        await self._queue.put(_Pending(texts, pairs, future))
        try:
            return await future
        finally:
            self._in_flight -= len(texts)

    def abort_queued(self, exc: BaseException) -> int:
        """Fail every request still waiting (not the batch being scored) with ``exc``; how many there were.
        The stop signal, if queued, stays queued."""
        aborted, keep = [], []
        if self._carry is not None:
            aborted.append(self._carry)
            self._carry = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            (keep if pending is None else aborted).append(pending)
        for pending in keep:
            self._queue.put_nowait(pending)
        for pending in aborted:
            if not pending.future.done():
                pending.future.set_exception(exc)
        return len(aborted)

    async def run_in_model_thread(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the model's thread (between batches), without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function)

    async def _next(self, timeout: float | None) -> _Pending | None:
        """The carried-over request, else the next queued one (waiting at most ``timeout``); raises on timeout."""
        if self._carry is not None:
            pending, self._carry = self._carry, None
            return pending
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and the requests that arrive within the wait, up to the batch size; True at shutdown.

        A request that would overflow the batch, or that mixes single texts with pairs, is carried over
        to start the next batch, so requests are scored in arrival order.
        """
        batch, size = [first], len(first.texts)
        concurrent = self._last_batch_requests > 1 or not self._queue.empty() or self._carry is not None
        deadline = first.queued_at + (self.max_wait if concurrent else 0.0)
        while size < self.max_batch_size:
            try:
                pending = await self._next(deadline - time.perf_counter())
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if pending is None:
                return batch, True
            if size + len(pending.texts) > self.max_batch_size or (pending.pairs is None) != (first.pairs is None):
                self._carry = pending
                break
            batch.append(pending)
            size += len(pending.texts)
        return batch, False

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is None:
                break
            batch, stopping = await self._collect(first)
            await self._score(batch)
        leftovers = [self._carry] if self._carry is not None else []
        while not self._queue.empty():  # requests that arrived with the stop signal
            leftovers.append(self._queue.get_nowait())
        for pending in leftovers:
            if pending is not None:
                await self._score([pending])

    async def _score(self, batch: list[_Pending]) -> None:
        self._last_batch_requests = len(batch)
        texts = [t for p in batch for t in p.texts]
        pairs = None if batch[0].pairs is None else [t for p in batch for t in p.pairs]
        try:
            proba = await self.run_in_model_thread(lambda: self.predict(TextDataset(texts=texts, text_pairs=pairs)))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if self.on_batch:
            self.on_batch(len(texts))
        start = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(proba[start:start + len(pending.texts)])
            start += len(pending.texts)
