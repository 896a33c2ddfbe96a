"""The batcher, driven directly: how batches form, split, fail, expire and overflow.

The graphs here are small numpy functions with a gate, so a test can hold the worker busy while
it queues requests and then see exactly which batches ran. Requests come from caller threads,
as gRPC's handler threads send them. Where a batch is held open, the batcher runs on a fake
clock, so the hold ends when the test moves time or by the policy's other rules, never by the
machine's speed. (The policy's decisions themselves are tested in test_batching_policy.py; the
real ONNX graphs are batched in test_determinism.py and the end-to-end tests.)
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batching import Batcher, BatcherStopped, BatchPolicySettings
from service.errors import CallerGone, DeadlineExpired, QueueFull, ShuttingDown
from service.metrics import GraphMetrics, Metrics
from tests.fake_clock import FakeClock

# Stand-ins for gRPC's handler threads.
CALLERS = ThreadPoolExecutor(64, thread_name_prefix="caller")


class GatedGraph:
    """Doubles its input and sums each row; records every batch; can hold the worker."""

    def __init__(
        self, hold_first: bool = False, fail_when: Callable[[np.ndarray], bool] | None = None
    ) -> None:
        self.batches: list[np.ndarray] = []
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self._fail_when = fail_when

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        self.batches.append(inputs.copy())
        self.threads.append(threading.current_thread().name)
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


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class CallsInFlight:
    """The calls in the server, as the batcher reads them (the service's InFlightRequests)."""

    def __init__(self, count: int) -> None:
        self.count = count


# Under load from the first arrival that finds company; a held batch waits at most 0.2 s of
# its clock, 0.05 s once arrivals pause. On a FakeClock a held batch goes once the test moves
# time past its hold: the worker, having waited in real time for what remained of the hold,
# reads the clock again.
HOLDING = BatchPolicySettings(max_delay_seconds=0.2, load_weight=1.0)


@contextlib.contextmanager
def running(
    *,
    max_batch_size: int,
    max_queue_rows: int,
    policy: BatchPolicySettings | None = None,
    calls: CallsInFlight | None = None,
    clock: Callable[[], float] = time.monotonic,
    metrics: GraphMetrics | None = None,
) -> Iterator[Batcher]:
    """A started batcher named "g", closed at the end.

    Unless a test says otherwise, the server has other calls in flight, so requests go to the
    worker thread (a lone caller's requests run on its own thread; they have their own tests),
    and batches are never held open.
    """
    batcher = Batcher(
        "g",
        max_batch_size=max_batch_size,
        max_queue_rows=max_queue_rows,
        policy=policy or BatchPolicySettings(),
        load=calls or CallsInFlight(2),
        metrics=metrics,
        clock=clock,
    )
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.close()


def submit(batcher: Batcher, graph: Any, *arrays: np.ndarray, **kw: Any) -> list[Future[Any]]:
    """Each array run through the batcher from a caller thread of its own, in this order: each
    is queued (or done) before the next is sent."""
    futures = []
    for array in arrays:
        queued_before = batcher.queued_rows
        future = CALLERS.submit(batcher.run, graph, array, **kw)
        wait_until(lambda f=future, n=queued_before: batcher.queued_rows > n or f.done())
        futures.append(future)
    return futures


def outcomes_of(futures: list[Future[Any]]) -> list[Any]:
    """Each future's result, or its exception."""
    return [f.exception(timeout=30) or f.result() for f in futures]


def together(futures: list[Future[Any]]) -> list[Any]:
    """Every result, once all are in."""
    return [f.result(timeout=30) for f in futures]


def one_after_another(batcher: Batcher, graph: Any, *arrays: np.ndarray) -> list[Any]:
    """Each array run through the batcher from a caller thread, the next sent once the last
    has returned; every result."""
    return [CALLERS.submit(batcher.run, graph, array).result(timeout=30) for array in arrays]


HOLDING_ROW = rows(1000, 1)


def behind_busy_worker(
    batcher: Batcher,
    graph: GatedGraph,
    queued: Callable[[], list[Future[Any]]],
    meanwhile: Callable[[], None] | None = None,
) -> list[Any]:
    """Hold the worker on one row of `graph` (built with hold_first), queue the requests that
    `queued` sends, run `meanwhile`, then release the worker. Returns every outcome (result
    or exception), the holding request's first."""
    holding = CALLERS.submit(batcher.run, graph, HOLDING_ROW)
    assert graph.entered.wait(10)
    futures = queued()
    if meanwhile is not None:
        meanwhile()
    graph.gate.set()
    return outcomes_of([holding, *futures])


def assert_doubled(result: list[np.ndarray], inputs: np.ndarray) -> None:
    doubled, sums = result
    np.testing.assert_array_equal(doubled, inputs * 2)
    np.testing.assert_array_equal(sums, inputs.sum(axis=1, keepdims=True))


def test_a_lone_request_runs_at_once_even_with_a_long_max_delay() -> None:
    graph = GatedGraph()
    inputs = [rows(i, 1) for i in range(5)]
    # Held, a request would wait 150 s for arrivals to pause, past one_after_another's 30 s.
    with running(max_batch_size=8, max_queue_rows=64, calls=CallsInFlight(1),
                 policy=BatchPolicySettings(max_delay_seconds=600)) as b:
        results = one_after_another(b, graph, *inputs)  # never any company
    assert graph.batch_sizes == [1] * 5
    for result, array in zip(results, inputs, strict=True):
        assert_doubled(result, array)


def test_requests_queued_while_the_worker_is_busy_form_full_batches() -> None:
    graph = GatedGraph(hold_first=True)
    inputs = [rows(i, 1) for i in range(8)]
    with running(max_batch_size=4, max_queue_rows=64) as b:

        def eight_rows_wait() -> None:
            assert b.queued_rows == 8

        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, *inputs), eight_rows_wait)
        assert b.queued_rows == 0
    assert graph.batch_sizes == [1, 4, 4]
    for result, array in zip(outcomes[1:], inputs, strict=True):
        assert_doubled(result, array)


def test_a_partial_batch_runs_when_the_worker_frees_up() -> None:
    graph = GatedGraph(hold_first=True)
    inputs = [rows(0, 2), rows(2, 1), rows(3, 3)]
    with running(max_batch_size=16, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, *inputs))
    assert graph.batch_sizes == [1, 6]
    for result, array in zip(outcomes[1:], inputs, strict=True):
        assert_doubled(result, array)


def test_other_calls_in_the_server_count_as_load_but_a_lone_caller_never_waits() -> None:
    """Requests that never meet in the batcher still show the load through the calls in
    flight in the server: with company there, a lone arrival waits for others to join it."""

    def scenario(in_flight: int) -> list[int]:
        graph = GatedGraph()
        # Time stands still: a held batch goes only once it is full.
        with running(max_batch_size=3, max_queue_rows=64, policy=HOLDING, clock=FakeClock(),
                     calls=CallsInFlight(in_flight)) as b:
            together(submit(b, graph, *[rows(i, 1) for i in range(3)]))
        return graph.batch_sizes

    assert scenario(in_flight=1) == [1, 1, 1]
    assert scenario(in_flight=32) == [3]


def test_a_lone_small_request_runs_on_its_own_thread_and_anything_else_on_the_worker() -> None:
    """Alone in the server, a small request skips the thread hand-offs; a large one, or one
    with company, runs on the worker."""

    def scenario(in_flight: int, count: int) -> str:
        graph = GatedGraph()
        with running(max_batch_size=64, max_queue_rows=256,
                     calls=CallsInFlight(in_flight)) as b:
            assert_doubled(b.run(graph, rows(0, count)), rows(0, count))
        (thread,) = graph.threads
        return thread

    caller = threading.current_thread().name
    assert scenario(in_flight=1, count=1) == caller
    assert scenario(in_flight=1, count=16) == caller
    assert scenario(in_flight=1, count=17) == "batcher-g"
    assert scenario(in_flight=2, count=1) == "batcher-g"


def test_a_lone_request_split_across_batches_runs_every_piece_on_the_worker() -> None:
    graph = GatedGraph()
    with running(max_batch_size=2, max_queue_rows=64, calls=CallsInFlight(1)) as b:
        assert_doubled(b.run(graph, rows(0, 5)), rows(0, 5))
    assert (graph.batch_sizes, set(graph.threads)) == ([2, 2, 1], {"batcher-g"})


def test_under_load_a_partial_batch_is_held_until_its_time_is_up() -> None:
    graph = GatedGraph()
    clock = FakeClock()
    with running(max_batch_size=64, max_queue_rows=256, policy=HOLDING, clock=clock) as b:
        futures = submit(b, graph, *[rows(i, 1) for i in range(6)])
        assert b.queued_rows == 6
        clock.advance(0.2)  # the hold's end, whichever rule set it
        together(futures)
    assert graph.batch_sizes == [6]


GROUP = [rows(i, 1) for i in range(20)]


def learn_a_group_of_20(batcher: Batcher, graph: GatedGraph, clock: FakeClock) -> None:
    """Batches 1 and 2: 20 callers queue behind a busy worker and their batch closes by
    waiting (time moves by max_delay, past its hold), so the group's size is 20."""
    behind_busy_worker(batcher, graph, lambda: submit(batcher, graph, *GROUP),
                       lambda: clock.advance(2.0))
    assert graph.batch_sizes == [1, 20]


def test_a_held_batch_closes_once_its_group_of_callers_is_back() -> None:
    """Once every request in the server waits in the held batch, and it is as large as the last
    batch that waited, nobody else is coming: it goes without waiting for time to pass. While
    some other call is still in the server, or the batch is smaller than the group, it waits."""

    def scenario(*arrivals: tuple[int, int]) -> list[int]:
        """After the group is learned, each (calls in flight, requests) arrives in turn; time
        stands still. The sizes of the batches after the first two."""
        graph = GatedGraph(hold_first=True)
        clock = FakeClock()
        calls = CallsInFlight(20)
        with running(max_batch_size=64, max_queue_rows=256, clock=clock, calls=calls,
                     policy=BatchPolicySettings(max_delay_seconds=2.0)) as b:
            learn_a_group_of_20(b, graph, clock)
            futures = []
            for in_flight, count in arrivals:
                calls.count = in_flight
                futures += submit(b, graph, *GROUP[:count])
            together(futures)  # a batch still held fails this: time never moves
        return graph.batch_sizes[2:]

    assert scenario((20, 20)) == [20]
    # One call not back yet: held; it comes back and joins.
    assert scenario((21, 20), (21, 1)) == [21]
    # Half the group: held; the other half comes back and joins.
    assert scenario((10, 10), (20, 10)) == [20]


def test_one_batch_in_eight_waits_even_when_its_group_is_back_so_a_larger_group_is_seen() -> None:
    graph = GatedGraph(hold_first=True)
    clock = FakeClock()
    calls = CallsInFlight(20)
    with running(max_batch_size=64, max_queue_rows=256, clock=clock, calls=calls,
                 policy=BatchPolicySettings(max_delay_seconds=2.0)) as b:
        learn_a_group_of_20(b, graph, clock)
        for _ in range(6):  # batches 3 to 8 go as soon as the group is back
            together(submit(b, graph, *GROUP))
        # Batch 9 waits although the group is back: a 21st caller still joins it.
        ninth = submit(b, graph, *GROUP)
        calls.count = 21
        ninth += submit(b, graph, rows(20, 1))
        clock.advance(2.0)  # max_delay: the hold is over
        together(ninth)
    assert graph.batch_sizes == [1] + [20] * 7 + [21]


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    graph = GatedGraph(hold_first=True)
    inputs = [rows(0, 1), rows(1, 10), rows(11, 2)]
    with running(max_batch_size=4, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, *inputs))
    # Rows are taken in arrival order, a large request filling the room left in batches.
    assert graph.batch_sizes == [1, 4, 4, 4, 1]
    np.testing.assert_array_equal(np.concatenate(graph.batches[1:]), np.concatenate(inputs))
    for result, array in zip(outcomes[1:], inputs, strict=True):
        assert_doubled(result, array)


def test_an_error_in_a_batch_reaches_every_request_in_it_and_the_next_batch_runs() -> None:
    poison = float(rows(2, 1)[0, 0])
    graph = GatedGraph(hold_first=True, fail_when=lambda x: bool((x == poison).any()))
    inputs = [rows(i, 1) for i in range(6)]
    with running(max_batch_size=3, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, *inputs))
    assert graph.batch_sizes == [1, 3, 3]
    assert [type(o).__name__ for o in outcomes[1:4]] == ["ValueError"] * 3
    for result, array in zip(outcomes[4:], inputs[3:], strict=True):
        assert_doubled(result, array)


def test_a_failed_piece_of_a_split_request_fails_it_once_and_skips_its_other_pieces() -> None:
    graph = GatedGraph(hold_first=True, fail_when=lambda x: len(x) == 4 and x[0, 0] == 3)
    large, after = rows(1, 10), rows(11, 1)
    with running(max_batch_size=4, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, large, after))
    assert isinstance(outcomes[1], ValueError)
    assert_doubled(outcomes[2], after)
    # The large request's first piece failed: its other rows never ran.
    assert graph.batch_sizes == [1, 4, 1]


class BrokenGraph:
    """Returns something that is not a list of arrays: the worker itself breaks on it."""

    def run(self, inputs: np.ndarray) -> Any:
        return None


def test_when_the_worker_dies_every_waiting_request_gets_the_error() -> None:
    graph = GatedGraph(hold_first=True)
    with running(max_batch_size=2, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(b, graph, lambda: [
            *submit(b, BrokenGraph(), rows(0, 1), rows(1, 1)), *submit(b, graph, rows(2, 1))
        ])
        with pytest.raises(BatcherStopped):
            b.run(graph, rows(3, 1))
    assert_doubled(outcomes[0], HOLDING_ROW)
    assert all(isinstance(o, TypeError) for o in outcomes[1:])


def test_a_request_whose_deadline_passed_in_the_queue_is_dropped_unrun() -> None:
    graph = GatedGraph(hold_first=True)
    expired, alive = rows(0, 1), rows(1, 1)
    with running(max_batch_size=8, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(
            b, graph,
            lambda: [*submit(b, graph, expired, deadline=time.monotonic() + 0.05),
                     *submit(b, graph, alive, deadline=time.monotonic() + 60)],
            lambda: time.sleep(0.1),
        )
    assert isinstance(outcomes[1], DeadlineExpired)
    assert "not run" in str(outcomes[1])
    assert_doubled(outcomes[2], alive)
    assert not any((batch == expired[0]).all(axis=1).any() for batch in graph.batches)


def test_a_request_whose_deadline_passes_while_it_runs_returns_at_its_deadline() -> None:
    graph = GatedGraph(hold_first=True)
    with running(max_batch_size=8, max_queue_rows=64) as b:
        started = time.monotonic()
        with pytest.raises(DeadlineExpired, match="while the request ran"):
            b.run(graph, rows(0, 1), deadline=started + 0.2)
        assert time.monotonic() - started < 5
        graph.gate.set()
        assert_doubled(b.run(graph, rows(1, 1)), rows(1, 1))  # the worker carries on


def test_a_lone_request_whose_deadline_already_passed_is_not_run() -> None:
    graph = GatedGraph()
    with running(max_batch_size=8, max_queue_rows=64, calls=CallsInFlight(1)) as b:
        with pytest.raises(DeadlineExpired, match="not run"):
            b.run(graph, rows(0, 1), deadline=time.monotonic() - 0.001)
        assert_doubled(b.run(graph, rows(1, 1), deadline=time.monotonic() + 60), rows(1, 1))
    assert graph.batch_sizes == [1]


def test_a_request_whose_caller_left_is_not_run() -> None:
    graph = GatedGraph(hold_first=True)
    caller_waits = threading.Event()
    caller_waits.set()
    with running(max_batch_size=8, max_queue_rows=64) as b:
        outcomes = behind_busy_worker(
            b, graph,
            lambda: [*submit(b, graph, rows(0, 1), is_active=caller_waits.is_set),
                     *submit(b, graph, rows(1, 1), is_active=lambda: True)],
            caller_waits.clear,
        )
    assert isinstance(outcomes[1], CallerGone)
    assert_doubled(outcomes[2], rows(1, 1))
    assert graph.batch_sizes == [1, 1]


def test_a_full_queue_refuses_at_once_counting_rows_not_requests() -> None:
    graph = GatedGraph(hold_first=True)
    with running(max_batch_size=8, max_queue_rows=4) as b:
        late: list[Future[Any]] = []

        def overflow() -> None:
            with pytest.raises(QueueFull, match="3 of 4 rows"):
                b.run(graph, rows(3, 2))
            late.extend(submit(b, graph, rows(5, 1)))  # one more row still fits
            assert b.queued_rows == 4

        outcomes = behind_busy_worker(b, graph, lambda: submit(b, graph, rows(0, 3)), overflow)
        assert_doubled(late[0].result(timeout=30), rows(5, 1))
    assert_doubled(outcomes[1], rows(0, 3))


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    graph = GatedGraph(hold_first=True)
    batcher = Batcher("g", max_batch_size=8, max_queue_rows=64,
                      policy=BatchPolicySettings(), load=CallsInFlight(2))
    batcher.start()
    queued: list[Future[Any]] = []
    closing: list[Future[None]] = []

    def queue_one() -> list[Future[Any]]:
        queued.extend(submit(batcher, graph, rows(0, 1)))
        return queued

    def close_meanwhile() -> None:
        closing.append(CALLERS.submit(batcher.close))
        wait_until(queued[0].done)  # failed at once; the close waits for the running batch

    outcomes = behind_busy_worker(batcher, graph, queue_one, close_meanwhile)
    closing[0].result(timeout=30)
    assert_doubled(outcomes[0], HOLDING_ROW)  # the running batch finished
    assert isinstance(outcomes[1], ShuttingDown)
    with pytest.raises(ShuttingDown):
        batcher.run(graph, rows(1, 1))


def test_batch_metrics_count_rows_per_run() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    graph = GatedGraph(hold_first=True)
    with running(max_batch_size=8, max_queue_rows=64, metrics=metrics.graph("g")) as b:

        def five_rows_wait() -> None:
            assert registry.get_sample_value("vae_queue_depth", {"graph": "g"}) == 5

        behind_busy_worker(
            b, graph, lambda: submit(b, graph, rows(0, 2), rows(2, 3)), five_rows_wait
        )
    sample = registry.get_sample_value
    assert sample("vae_batch_size_count", {"graph": "g"}) == 2
    assert sample("vae_batch_size_sum", {"graph": "g"}) == 6
    assert sample("vae_batch_size_bucket", {"graph": "g", "le": "8.0"}) == 2
    assert sample("vae_batch_size_bucket", {"graph": "g", "le": "4.0"}) == 1
    assert sample("vae_queue_wait_seconds_count", {"graph": "g"}) == 3
    assert sample("vae_inference_seconds_count", {"graph": "g"}) == 2
    assert sample("vae_queue_depth", {"graph": "g"}) == 0
