"""The batcher's mechanism: a bounded queue, one worker thread, one future per request.

The shape follows MLServer's adaptive batcher: requests queue up to `max_queue_rows` rows, one
worker forms batches of up to `max_batch_size` rows and runs them, and an error in the worker
reaches every request it concerns. What to run inline and how long to hold a partial batch
are the policy's decisions (policy.py); how rows are split and reassembled is jobs.py's.

Requests arrive on gRPC's handler threads. Each queues its rows and waits on its own future
while the graph's worker thread forms batches and runs them; onnxruntime releases the GIL while
it runs, so the handler threads go on reading requests and writing responses meanwhile. One
lock guards the queue and the policy; the worker sleeps on it until there is work, or until a
batch it holds open has to go.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from service.batching.jobs import (
    IsActive,
    Job,
    Outcome,
    Piece,
    Runnable,
    fail,
    settle,
    split_back,
    stack,
    take_batch,
)
from service.batching.policy import BatchPolicy, BatchPolicySettings, Clock
from service.errors import DeadlineExpired, QueueFull, ShuttingDown
from service.metrics import GraphMetrics

log = logging.getLogger(__name__)


class LoadSignal(Protocol):
    """The load the batcher sees beyond its own queue: the calls in the server.

    The server's InFlightRequests is one: it counts each call from its admission until gRPC
    has finished it.
    """

    @property
    def count(self) -> int:
        """Calls in the server now, the one asking included."""
        ...


class BatcherStopped(RuntimeError):
    """The batcher's worker died on an unexpected error; requests get that error."""


class Batcher:
    """Batches requests for one graph and runs the batches on its own worker thread.

    `load` tells how many calls are in the server (the policy weighs it); `metrics`, when
    given, gets every batch's size, queue waits and inference time, and the queue's
    depth as it changes. `clock` is the batcher's and its policy's sense of time; deadlines
    are instants of it.
    """

    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int,
        max_queue_rows: int,
        policy: BatchPolicySettings,
        load: LoadSignal,
        metrics: GraphMetrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_rows = max_queue_rows
        self._load = load
        self._metrics = metrics
        self._clock = clock
        # Everything below is guarded by the lock; the worker waits on `_arrivals` for work.
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)
        self._policy = BatchPolicy(policy, clock)
        self._pending: deque[Job] = deque()
        self._pending_rows = 0
        self._worker_busy = False
        self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not those already running)."""
        return self._pending_rows

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(
            target=self._work, name=f"batcher-{self.name}", daemon=True
        )
        self._thread.start()

    def run(
        self,
        graph: Runnable,
        inputs: np.ndarray,
        deadline: float | None = None,
        is_active: IsActive = None,
    ) -> list[np.ndarray]:
        """Run `graph` on `inputs` (rows on axis 0) within some batch; its outputs' rows.

        `deadline` is an instant of the batcher's clock after which the request is dropped
        unrun; `is_active` tells whether the caller still waits (a request it gave up is not
        run). Raises QueueFull when the queue cannot take the rows, ShuttingDown after
        `close`, DeadlineExpired when the deadline passes first, CallerGone when the caller
        left.
        """
        rows = len(inputs)
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down; retry on another replica")
            if self._failure is not None:
                raise BatcherStopped(f"the {self.name} batcher stopped") from self._failure
            if self._pending_rows + rows > self.max_queue_rows:
                raise QueueFull(
                    f"the {self.name} queue is full ({self._pending_rows} of "
                    f"{self.max_queue_rows} rows waiting); retry with backoff"
                )
            # A request larger than a batch goes to the worker, which splits it.
            inline = self._policy.arrive(
                rows,
                worker_busy=self._worker_busy,
                queued_requests=len(self._pending),
                calls_in_flight=self._load.count,
            ) and rows <= self.max_batch_size
            if inline:
                self._policy.batch_formed(1, waited=False)
            else:
                job = Job(graph, inputs, deadline, is_active, self._clock())
                was_empty = not self._pending
                self._pending.append(job)
                self._queue_changed(rows)
                # The worker needs waking only for its first job, or when a held batch is done.
                if was_empty or self._hold_until() is None:
                    self._arrivals.notify()
        if inline:
            return self._run_inline(graph, inputs, deadline)
        return self._wait(job)

    def close(self) -> None:
        """Refuse new requests, fail the queued ones, let the running batch finish, stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._fail_queued(ShuttingDown("the server is shutting down"))
            self._arrivals.notify_all()
        if self._thread is not None:
            self._thread.join()

    # --- on the handler threads ---

    def _run_inline(
        self, graph: Runnable, inputs: np.ndarray, deadline: float | None
    ) -> list[np.ndarray]:
        """Run a small request that found the server otherwise idle, right here."""
        started = self._clock()
        if deadline is not None and started >= deadline:
            raise DeadlineExpired("the deadline passed before the request could start; not run")
        try:
            return graph.run(inputs)
        finally:
            self._observe_batch(started, len(inputs), (started,))

    def _wait(self, job: Job) -> list[np.ndarray]:
        """The queued job's outputs, once the worker has run all of it; or its error."""
        timeout = None if job.deadline is None else job.deadline - self._clock()
        try:
            return job.future.result(timeout)
        except TimeoutError:
            # Withdrawn if still queued; if it is running, its outputs will go unread.
            ran = not job.future.cancel()
            raise DeadlineExpired(
                f"the deadline passed after {self._clock() - job.enqueued:.3f} s "
                + ("while the request ran" if ran else
                   f"in the {self.name} queue; the request was not run")
            ) from None

    # --- on the worker thread ---

    def _work(self) -> None:
        pieces: list[Piece] | None = None
        try:
            while (pieces := self._next_batch()) is not None:
                for future, result, exc in self._run(pieces):
                    settle(future, result, exc)
        except BaseException as exc:
            log.exception("the %s batcher's worker stopped", self.name)
            self._fail_everything(pieces or [], exc)

    def _next_batch(self) -> list[Piece] | None:
        """Wait for work and take the next batch off the queue; None once closed."""
        with self._lock:
            self._worker_busy = False
            while not self._closed:
                if not self._pending:
                    self._arrivals.wait()
                    continue
                hold_until = self._hold_until()
                if hold_until is not None and self._clock() < hold_until:
                    # Arrivals that end the hold wake the worker; others only move the time.
                    self._arrivals.wait(hold_until - self._clock())
                    continue
                pieces, taken_rows = take_batch(
                    self._pending, self.max_batch_size, self._clock(), self.name
                )
                self._queue_changed(-taken_rows)
                if pieces:
                    self._policy.batch_formed(len(pieces), waited=hold_until is not None)
                    self._worker_busy = True
                    return pieces
            return None

    def _hold_until(self) -> float | None:
        """Until when the queued batch may stay open to fill; None: it goes now (a full batch
        always does). The caller holds the lock and the queue is not empty."""
        if self._pending_rows >= self.max_batch_size:
            return None
        return self._policy.hold_until(
            queued_requests=len(self._pending),
            oldest_arrival=self._pending[0].enqueued,
            calls_in_flight=self._load.count,
        )

    def _run(self, pieces: list[Piece]) -> list[Outcome]:
        """Run one batch; the outcome of every request it completes or fails."""
        inputs = stack(pieces)
        started = self._clock()
        try:
            outputs = pieces[0][0].graph.run(inputs)
        except Exception as exc:
            return fail(pieces, exc)
        finally:
            self._observe(pieces, started, len(inputs))
        return split_back(pieces, outputs)

    def _fail_everything(self, pieces: list[Piece], exc: BaseException) -> None:
        """The worker died: the requests of its last batch and every queued one get its error,
        and so will later ones."""
        with self._lock:
            self._failure = exc
            for job, _, _ in pieces:
                settle(job.future, None, exc)
            self._fail_queued(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        """Give every queued request `exc` and empty the queue; the caller holds the lock."""
        for job in self._pending:
            settle(job.future, None, exc)
        self._pending.clear()
        self._queue_changed(-self._pending_rows)

    def _queue_changed(self, rows: int) -> None:
        """Count `rows` more rows queued (fewer if negative); the caller holds the lock."""
        self._pending_rows += rows
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._pending_rows)

    def _observe(self, pieces: list[Piece], started: float, rows: int) -> None:
        self._observe_batch(
            started, rows, (job.enqueued for job, start, _ in pieces if start == 0)
        )

    def _observe_batch(self, started: float, rows: int, enqueued: Iterable[float]) -> None:
        """Record a batch of `rows` rows that started running at `started`, with the times
        its requests (those whose first rows are in it) were queued."""
        metrics = self._metrics
        if metrics is None:
            return
        metrics.inference_seconds.observe(self._clock() - started)
        metrics.batch_size.observe(rows)
        for queued in enqueued:
            metrics.queue_wait_seconds.observe(started - queued)
