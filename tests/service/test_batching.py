"""The batcher, driven directly: how batches form, split, fail, expire and overflow.

The graphs here are small numpy functions with a gate, so a test can hold the worker busy while
it queues requests and then see exactly which batches ran. (The real ONNX graphs are batched in
test_determinism.py and the end-to-end tests.)
"""

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from service.batching import Batcher, BatcherStopped
from service.errors import DeadlineExpired, QueueFull, ShuttingDown

T = TypeVar("T")


class GatedGraph:
    """Doubles its input and sums each row; records every batch; can hold the worker."""

    def __init__(
        self, hold_first: bool = False, fail_when: Callable[[np.ndarray], bool] | None = None
    ) -> None:
        self.batches: list[np.ndarray] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self._fail_when = fail_when

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        self.batches.append(inputs.copy())
        self.entered.set()
        self.gate.wait(timeout=30)
        if self._fail_when is not None and self._fail_when(inputs):
            raise ValueError("this batch is poisoned")
        return [inputs * 2, inputs.sum(axis=1, keepdims=True)]

    @property
    def batch_sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def rows(start: int, count: int) -> np.ndarray:
    """`count` distinct rows of width 3, numbered from `start`."""
    return np.arange(start * 3, (start + count) * 3, dtype=np.float32).reshape(count, 3)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def started(batcher: Batcher) -> Batcher:
    batcher.start()
    return batcher


async def hold_worker(batcher: Batcher, graph: GatedGraph) -> "asyncio.Task[list[np.ndarray]]":
    """Submit one row and wait until the worker is running it (and held at the gate)."""
    task = asyncio.ensure_future(batcher.run(graph, rows(1000, 1)))
    await asyncio.to_thread(graph.entered.wait, 10)
    return task


def submit(batcher: Batcher, graph: GatedGraph, *arrays: np.ndarray, **kw: Any) -> list[Any]:
    return [asyncio.ensure_future(batcher.run(graph, array, **kw)) for array in arrays]


async def settle() -> None:
    """Let tasks created so far reach their first await (their rows are queued then)."""
    for _ in range(3):
        await asyncio.sleep(0)


def assert_doubled(result: list[np.ndarray], inputs: np.ndarray) -> None:
    doubled, sums = result
    np.testing.assert_array_equal(doubled, inputs * 2)
    np.testing.assert_array_equal(sums, inputs.sum(axis=1, keepdims=True))


def test_a_lone_request_runs_at_once_even_with_a_long_max_delay() -> None:
    async def scenario() -> None:
        graph = GatedGraph()
        batcher = await started(Batcher("g", max_batch_size=8, max_queue_rows=64,
                                        max_delay_ms=600_000))
        for i in range(5):  # one after another: never any company
            assert_doubled(await asyncio.wait_for(batcher.run(graph, rows(i, 1)), 5), rows(i, 1))
        assert graph.batch_sizes == [1] * 5
        await batcher.close()

    run(scenario())


def test_requests_queued_while_the_worker_is_busy_form_full_batches() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=4, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        inputs = [rows(i, 1) for i in range(8)]
        tasks = submit(batcher, graph, *inputs)
        await settle()
        assert batcher.queued_rows == 8
        graph.gate.set()
        results = await asyncio.gather(first, *tasks)
        assert graph.batch_sizes == [1, 4, 4]
        for result, array in zip(results[1:], inputs, strict=True):
            assert_doubled(result, array)
        assert batcher.queued_rows == 0
        await batcher.close()

    run(scenario())


def test_a_partial_batch_runs_when_the_worker_frees_up() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=16, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        inputs = [rows(0, 2), rows(2, 1), rows(3, 3)]
        tasks = submit(batcher, graph, *inputs)
        await settle()
        graph.gate.set()
        results = await asyncio.gather(first, *tasks)
        assert graph.batch_sizes == [1, 6]
        for result, array in zip(results[1:], inputs, strict=True):
            assert_doubled(result, array)
        await batcher.close()

    run(scenario())


def test_under_load_a_partial_batch_waits_up_to_max_delay_to_fill() -> None:
    async def scenario() -> None:
        graph = GatedGraph()
        batcher = await started(Batcher("g", max_batch_size=64, max_queue_rows=256,
                                        max_delay_ms=200))
        # Many callers at once: arrivals find company, so the batcher counts as loaded.
        first_wave = submit(batcher, graph, *[rows(i, 1) for i in range(20)])
        await asyncio.gather(*first_wave)
        before = len(graph.batches)
        second_wave = [asyncio.ensure_future(batcher.run(graph, rows(i, 1))) for i in range(6)]
        await asyncio.gather(*second_wave)
        assert graph.batch_sizes[before:] == [6]
        await batcher.close()

    run(scenario())


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=4, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        small, large, after = rows(0, 1), rows(1, 10), rows(11, 2)
        tasks = submit(batcher, graph, small, large, after)
        await settle()
        graph.gate.set()
        results = await asyncio.gather(first, *tasks)
        # Rows are taken in arrival order, a large request filling the room left in batches.
        assert graph.batch_sizes == [1, 4, 4, 4, 1]
        np.testing.assert_array_equal(np.concatenate(graph.batches[1:]),
                                      np.concatenate([small, large, after]))
        for result, array in zip(results[1:], (small, large, after), strict=True):
            assert_doubled(result, array)
        await batcher.close()

    run(scenario())


def test_an_error_in_a_batch_reaches_every_request_in_it_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        poison = float(rows(2, 1)[0, 0])
        graph = GatedGraph(hold_first=True, fail_when=lambda x: bool((x == poison).any()))
        batcher = await started(Batcher("g", max_batch_size=3, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        tasks = submit(batcher, graph, *[rows(i, 1) for i in range(6)])
        await settle()
        graph.gate.set()
        outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert graph.batch_sizes == [1, 3, 3]
        assert [type(o).__name__ for o in outcomes[1:4]] == ["ValueError"] * 3
        for result, i in zip(outcomes[4:], range(3, 6), strict=True):
            assert_doubled(result, rows(i, 1))
        await batcher.close()

    run(scenario())


def test_a_failed_piece_of_a_split_request_fails_it_once_and_skips_its_other_pieces() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True, fail_when=lambda x: len(x) == 4 and x[0, 0] == 3)
        batcher = await started(Batcher("g", max_batch_size=4, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        large, after = rows(1, 10), rows(11, 1)
        tasks = submit(batcher, graph, large, after)
        await settle()
        graph.gate.set()
        outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert isinstance(outcomes[1], ValueError)
        assert_doubled(outcomes[2], after)
        # The large request's first piece failed: its other rows never ran.
        assert graph.batch_sizes == [1, 4, 1]
        await batcher.close()

    run(scenario())


class BrokenGraph:
    """Returns something that is not a list of arrays: the worker itself breaks on it."""

    def run(self, inputs: np.ndarray) -> Any:
        return None


def test_when_the_worker_dies_every_waiting_request_gets_the_error() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        broken = BrokenGraph()
        batcher = await started(Batcher("g", max_batch_size=2, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        doomed = submit(batcher, broken, rows(0, 1), rows(1, 1))
        queued = submit(batcher, graph, rows(2, 1))
        await settle()
        graph.gate.set()
        outcomes = await asyncio.gather(first, *doomed, *queued, return_exceptions=True)
        assert_doubled(outcomes[0], rows(1000, 1))
        assert all(isinstance(o, TypeError) for o in outcomes[1:])
        with pytest.raises(BatcherStopped):
            await batcher.run(graph, rows(3, 1))
        await batcher.close()

    run(scenario())


def test_a_request_whose_deadline_passed_in_the_queue_is_dropped_unrun() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=8, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        expired, alive = rows(0, 1), rows(1, 1)
        late = submit(batcher, graph, expired, deadline=time.monotonic() + 0.05)
        fine = submit(batcher, graph, alive, deadline=time.monotonic() + 60)
        await asyncio.sleep(0.1)
        graph.gate.set()
        outcomes = await asyncio.gather(first, *late, *fine, return_exceptions=True)
        assert isinstance(outcomes[1], DeadlineExpired)
        assert "not run" in str(outcomes[1])
        assert_doubled(outcomes[2], alive)
        assert not any((batch == expired[0]).all(axis=1).any() for batch in graph.batches)
        await batcher.close()

    run(scenario())


def test_a_cancelled_request_is_not_run() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=8, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        (gone,) = submit(batcher, graph, rows(0, 1))
        (kept,) = submit(batcher, graph, rows(1, 1))
        await settle()
        gone.cancel()
        graph.gate.set()
        await first
        assert_doubled(await kept, rows(1, 1))
        assert graph.batch_sizes == [1, 1]
        await batcher.close()

    run(scenario())


def test_a_full_queue_refuses_at_once_counting_rows_not_requests() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=8, max_queue_rows=4))
        first = await hold_worker(batcher, graph)
        admitted = submit(batcher, graph, rows(0, 3))
        await settle()
        with pytest.raises(QueueFull, match="3 of 4 rows"):
            await batcher.run(graph, rows(3, 2))
        (fits,) = submit(batcher, graph, rows(5, 1))
        await settle()
        assert batcher.queued_rows == 4
        graph.gate.set()
        await asyncio.gather(first, *admitted, fits)
        await batcher.close()

    run(scenario())


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher("g", max_batch_size=8, max_queue_rows=64))
        first = await hold_worker(batcher, graph)
        queued = submit(batcher, graph, rows(0, 1))
        await settle()
        closing = asyncio.ensure_future(batcher.close())
        await settle()
        graph.gate.set()
        await closing
        assert_doubled(await first, rows(1000, 1))  # the running batch finished
        with pytest.raises(ShuttingDown):
            await queued[0]
        with pytest.raises(ShuttingDown):
            await batcher.run(graph, rows(1, 1))

    run(scenario())


def test_batch_metrics_count_rows_per_run() -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    async def scenario(metrics: Metrics) -> None:
        graph = GatedGraph(hold_first=True)
        batcher = await started(Batcher(
            "g", max_batch_size=8, max_queue_rows=64,
            metrics=lambda b: metrics.graph(b.name, lambda: b.queued_rows),
        ))
        first = await hold_worker(batcher, graph)
        tasks = submit(batcher, graph, rows(0, 2), rows(2, 3))
        await settle()
        depth = metrics.registry.get_sample_value("vae_queue_depth", {"graph": "g"})
        assert depth == 5
        graph.gate.set()
        await asyncio.gather(first, *tasks)
        await batcher.close()

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    run(scenario(metrics))
    sample = registry.get_sample_value
    assert sample("vae_batch_size_count", {"graph": "g"}) == 2
    assert sample("vae_batch_size_sum", {"graph": "g"}) == 6
    assert sample("vae_batch_size_bucket", {"graph": "g", "le": "8.0"}) == 2
    assert sample("vae_batch_size_bucket", {"graph": "g", "le": "4.0"}) == 1
    assert sample("vae_queue_wait_seconds_count", {"graph": "g"}) == 3
    assert sample("vae_inference_seconds_count", {"graph": "g"}) == 2
    assert sample("vae_queue_depth", {"graph": "g"}) == 0
