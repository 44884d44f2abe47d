"""The micro-batcher on its own: batches are cut at the size limit, answers go back in order, errors reach
every waiting request, and stopping scores what is queued."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from mlops.deploy.serving.batching import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def __call__(self, data):
        self.batches.append(list(data.texts))
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ValueError("model broke")
        return np.array([[float(len(t)), 1.0] for t in data.texts])


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=50)
        batcher.start()
        await batcher.submit(["warm", "up"])  # two texts, one request
        await asyncio.gather(batcher.submit(["a"]), batcher.submit(["bb"]))  # primes "concurrent"
        results = await asyncio.gather(*(batcher.submit(["x" * (i + 1)]) for i in range(20)))
        await batcher.stop()
        return results

    results = run(scenario())
    assert [row[0, 0] for row in results] == [float(i + 1) for i in range(20)]  # each request its own row, in order
    assert max(len(b) for b in model.batches) <= 8 and len(model.batches) < 2 + 20
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("model")


def test_a_lone_request_does_not_wait(monkeypatch):
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=5_000)
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(["only one"])
        elapsed = loop.time() - started
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 1.0


def test_a_request_larger_than_the_batch_is_scored_whole():
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=10)
        batcher.start()
        out = await batcher.submit([str(i) for i in range(10)])
        await batcher.stop()
        return out

    assert run(scenario()).shape == (10, 2) and model.batches == [[str(i) for i in range(10)]]


def test_a_model_error_reaches_every_request_of_the_batch():
    async def scenario():
        batcher = MicroBatcher(Recorder(fail=True), max_batch_size=8, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(batcher.submit(["a"]), batcher.submit(["b"]), return_exceptions=True)
        await batcher.stop()
        return results

    assert all(isinstance(r, ValueError) for r in run(scenario()))


def test_stop_scores_what_is_queued_then_refuses():
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=2, max_wait_ms=100)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(7)]
        await asyncio.sleep(0)
        await batcher.stop()
        answers = await asyncio.gather(*pending)
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.submit(["late"])
        return answers

    assert len(run(scenario())) == 7
    assert sorted(t for b in model.batches for t in b) == sorted(f"t{i}" for i in range(7))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), max_batch_size=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(Recorder(), max_batch_size=1, max_wait_ms=-1)


# --- padding-aware inference batches (models.hf_common.batching) ----------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from models.hf_common.batching import padding_aware_batches  # noqa: E402


def _cost(batches, lengths, call_cost):
    return sum(call_cost + len(b) * lengths[b].max() for b in batches)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=0, max_size=80), st.integers(1, 40), st.floats(0, 500))
def test_padding_aware_batches_cover_every_row_once_and_never_cost_more_than_fixed_cuts(lengths, size, call_cost):
    lengths = np.asarray(lengths, dtype=np.int64)
    rows = np.arange(len(lengths))
    batches = padding_aware_batches(lengths, rows, size, call_cost)
    assert sorted(np.concatenate(batches).tolist() if batches else []) == rows.tolist()
    assert all(0 < len(b) <= size for b in batches)
    flat = np.concatenate(batches) if batches else rows
    assert (np.diff(lengths[flat]) <= 0).all(), "longest first, so each batch is padded to its first row"
    order = rows[np.argsort(-lengths, kind="stable")]
    fixed = [order[i:i + size] for i in range(0, len(order), size)]
    assert _cost(batches, lengths, call_cost) <= _cost(fixed, lengths, call_cost) + 1e-9


def test_a_mixed_batch_is_split_where_the_lengths_drop_and_a_uniform_one_stays_whole():
    mixed = np.array([60] * 4 + [8] * 28)
    batches = padding_aware_batches(mixed, np.arange(32), 32, call_cost=16)
    assert [len(b) for b in batches] == [4, 28], "4 long rows alone, not 28 short ones padded to 60 tokens"
    uniform = np.full(32, 20)
    assert [len(b) for b in padding_aware_batches(uniform, np.arange(32), 32, call_cost=16)] == [32]
    assert [len(b) for b in padding_aware_batches(uniform, np.arange(32), 16, call_cost=16)] == [16, 16]
    subset = padding_aware_batches(mixed, np.array([0, 5, 6]), 32, call_cost=1000)
    assert [b.tolist() for b in subset] == [[0, 5, 6]], "only the rows asked for, one call when calls are dear"
