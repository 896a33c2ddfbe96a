"""Dynamic batching for one ONNX graph: requests' rows are stacked into one onnxruntime run.

The shape follows MLServer's adaptive batcher: a bounded queue, one worker, one future per
request, and an error in the worker reaches every request it concerns. Sizes are counted in
rows, not requests (as pytriton does): inputs are concatenated on axis 0 up to
`max_batch_size` rows and outputs are split back by each request's row count; a request larger
than a batch runs in several pieces and is reassembled in order.

Requests arrive on gRPC's handler threads. Each queues its rows and waits on its own future
while the graph's worker thread forms batches and runs them; onnxruntime releases the GIL while
it runs, so the handler threads go on reading requests and writing responses meanwhile. One
lock guards the queue; the worker sleeps on it until there is work, or until a batch it holds
open has to go.

A small request that finds the server otherwise idle (no other call in it, nothing queued, the
worker free) skips the worker: its run takes about as long as the two thread hand-offs it would
cost (tens of microseconds), so it runs right away on its own handler thread. That keeps a
lone caller's latency at the gRPC floor plus the inference itself.

When the worker is busy, arrivals queue up and form the next batch. When it is free, a batch
goes at once, so a request that arrives alone never waits, unless the batcher is under load:
then a partial batch may stay open up to `max_delay_ms` (from its oldest request) to fill,
and closes sooner when arrivals pause for a quarter of that. Each batch costs two thread
hand-offs and one onnxruntime call whatever its size, so under load fewer, larger batches
leave more CPU for the requests. "Under load" means most recent arrivals found the batcher
busy, requests already queued or other calls in the server (a moving average), which a single
caller sending one request after another never does.

Callers that send their next request when the last one returns come back in groups, and once
a group is back nothing more is on its way: waiting for a pause then only idles the CPU (at 8
such callers on one core, a quarter of the time). So a batch held open also closes as soon as
every request in the server is waiting in it and it is as large as the largest of the last few
batches that closed by waiting (the group's size). The group's size is only learned from
batches that waited, and one batch in eight always waits, so a group that grows is seen.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from typing import Protocol

import numpy as np

from service.errors import CallerGone, DeadlineExpired, QueueFull, ShuttingDown
from service.metrics import GraphMetrics

log = logging.getLogger(__name__)


class Runnable(Protocol):
    """What a batcher runs: a graph taking (rows, ...) and giving outputs with rows on axis 0."""

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs for `inputs`, each with `len(inputs)` rows."""
        ...


# Whether the caller still waits for the answer; None: always.
IsActive = Callable[[], bool] | None


class BatcherStopped(RuntimeError):
    """The batcher's worker died on an unexpected error; requests get that error."""


class _Job:
    """One request; `offset` of its rows have been taken into batches so far.

    Its future stays pending while the request is queued, so that its waiting handler can
    still withdraw it (cancel), and is marked running when its first rows join a batch.
    """

    __slots__ = ("graph", "inputs", "rows", "future", "deadline", "is_active", "enqueued",
                 "offset", "parts", "failed")

    def __init__(
        self,
        graph: Runnable,
        inputs: np.ndarray,
        deadline: float | None,
        is_active: IsActive,
    ) -> None:
        self.graph = graph
        self.inputs = inputs
        self.rows = len(inputs)
        self.future: Future[list[np.ndarray]] = Future()
        self.deadline = deadline
        self.is_active = is_active
        self.enqueued = time.monotonic()
        self.offset = 0
        self.parts: list[list[np.ndarray]] = []
        self.failed = False


# (job, first row of the job in this batch, rows of the job in this batch)
_Piece = tuple[_Job, int, int]
# (future, result, exception): the end of one request, set once its last piece has run.
_Outcome = tuple[Future[list[np.ndarray]], list[np.ndarray] | None, BaseException | None]

# Up to this many rows a lone request runs on its handler thread (see the module's docstring):
# a run this small is dominated by reading the weights, not by the rows.
_INLINE_MAX_ROWS = 16
# How much each arrival moves the load average: a few lone arrivals end the "under load" mode.
_LOAD_WEIGHT = 0.25
# A batch kept open closes early when no request has arrived for this fraction of max_delay.
_PAUSE_FRACTION = 0.25
# The group's size is the largest of this many recent batches that closed by waiting...
_GROUP_MEMORY = 8
# ...and one batch in this many waits however large it is, so that a larger group is noticed.
_ALWAYS_WAIT_EVERY = 8


class Batcher:
    """Batches requests for one graph and runs the batches on its own worker thread."""

    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int,
        max_queue_rows: int,
        max_delay_ms: float = 0.0,
        metrics: Callable[["Batcher"], GraphMetrics] | None = None,
        requests_in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.name = name
        self._requests_in_flight = requests_in_flight
        self.max_batch_size = max_batch_size
        self._inline_max_rows = min(_INLINE_MAX_ROWS, max_batch_size)
        self.max_queue_rows = max_queue_rows
        self._max_delay_seconds = max_delay_ms / 1000
        self._metrics = metrics(self) if metrics is not None else None
        # Everything below is guarded by the lock; the worker waits on `_arrivals` for work.
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)
        self._pending: deque[_Job] = deque()
        self._pending_rows = 0
        self._worker_busy = False
        # Moving average over arrivals of "found the batcher busy or requests queued".
        self._load = 0.0
        # Requests in each of the last batches that closed by waiting; batches formed so far.
        self._waited_batch_sizes: deque[int] = deque(maxlen=_GROUP_MEMORY)
        self._batches_formed = 0
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

        `deadline` is a `time.monotonic()` instant after which the request is dropped unrun;
        `is_active` tells whether the caller still waits (a request it gave up is not run).
        Raises QueueFull when the queue cannot take the rows, ShuttingDown after `close`,
        DeadlineExpired when the deadline passes first, CallerGone when the caller left.
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
            # Company: the worker is busy, requests wait, or other calls are in the server.
            company = (
                1.0 if self._worker_busy or self._pending or self._requests_in_flight() > 1
                else 0.0
            )
            self._load += _LOAD_WEIGHT * (company - self._load)
            alone = (
                not company
                and rows <= self._inline_max_rows
                and (self._load <= 0.5 or not self._max_delay_seconds)
            )
            if alone:
                self._batches_formed += 1
            else:
                job = _Job(graph, inputs, deadline, is_active)
                was_empty = not self._pending
                self._pending.append(job)
                self._pending_rows += rows
                # The worker needs waking only for its first job, or when a held batch is done.
                if was_empty or self._hold_until() is None:
                    self._arrivals.notify()
        if alone:
            return self._run_alone(graph, inputs, deadline)
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

    def _run_alone(
        self, graph: Runnable, inputs: np.ndarray, deadline: float | None
    ) -> list[np.ndarray]:
        """Run a small request that found the server otherwise idle, right here."""
        started = time.monotonic()
        if deadline is not None and started >= deadline:
            raise DeadlineExpired("the deadline passed before the request could start; not run")
        try:
            return graph.run(inputs)
        finally:
            self._observe_batch(started, len(inputs), (started,))

    def _wait(self, job: _Job) -> list[np.ndarray]:
        """The queued job's outputs, once the worker has run all of it; or its error."""
        timeout = None if job.deadline is None else job.deadline - time.monotonic()
        try:
            return job.future.result(timeout)
        except TimeoutError:
            # Withdrawn if still queued; if it is running, its outputs will go unread.
            ran = not job.future.cancel()
            raise DeadlineExpired(
                f"the deadline passed after {time.monotonic() - job.enqueued:.3f} s "
                + ("while the request ran" if ran else
                   f"in the {self.name} queue; the request was not run")
            ) from None

    # --- on the worker thread ---

    def _work(self) -> None:
        pieces: list[_Piece] | None = None
        try:
            while (pieces := self._next_batch()) is not None:
                for future, result, exc in self._run(pieces):
                    _settle(future, result, exc)
        except BaseException as exc:
            log.exception("the %s batcher's worker stopped", self.name)
            self._fail_everything(pieces or [], exc)

    def _next_batch(self) -> list[_Piece] | None:
        """Wait for work and take the next batch off the queue; None once closed."""
        with self._lock:
            self._worker_busy = False
            while not self._closed:
                if not self._pending:
                    self._arrivals.wait()
                    continue
                hold_until = self._hold_until()
                if hold_until is not None and time.monotonic() < hold_until:
                    # Arrivals that end the hold wake the worker; others only move the time.
                    self._arrivals.wait(hold_until - time.monotonic())
                    continue
                pieces = self._take_batch(waited=hold_until is not None)
                if pieces:
                    self._worker_busy = True
                    return pieces
            return None

    def _hold_until(self) -> float | None:
        """Until when the queued partial batch may stay open to fill; None: it goes now."""
        if (
            self._load > 0.5
            and self._max_delay_seconds > 0
            and self._pending_rows < self.max_batch_size
            and not self._group_is_back()
        ):
            return self._close_at()
        return None

    def _group_is_back(self) -> bool:
        """Whether the batch held open has everyone it waits for (see the module docstring)."""
        if not self._waited_batch_sizes or self._batches_formed % _ALWAYS_WAIT_EVERY == 0:
            return False
        waiting = len(self._pending)
        return (
            waiting >= max(self._waited_batch_sizes) and waiting >= self._requests_in_flight()
        )

    def _close_at(self) -> float:
        """When a batch kept open must go: max_delay after its oldest request, or sooner once
        arrivals pause (the callers that were coming have come)."""
        return min(
            self._pending[0].enqueued + self._max_delay_seconds,
            self._pending[-1].enqueued + self._max_delay_seconds * _PAUSE_FRACTION,
        )

    def _take_batch(self, waited: bool) -> list[_Piece]:
        """Take up to max_batch_size rows off the queue; `waited` when the batch was held open
        until its time was up."""
        pieces: list[_Piece] = []
        rows = 0
        now = time.monotonic()
        pending = self._pending
        while pending and rows < self.max_batch_size:
            job = pending[0]
            if pieces and job.graph is not pieces[0][0].graph:
                break  # A model swap: a batch never mixes versions.
            if not self._wanted(job, now):
                pending.popleft()
                self._pending_rows -= job.rows - job.offset
                continue
            take = min(job.rows - job.offset, self.max_batch_size - rows)
            pieces.append((job, job.offset, take))
            job.offset += take
            rows += take
            self._pending_rows -= take
            if job.offset == job.rows:
                pending.popleft()
        if pieces:
            self._batches_formed += 1
            if waited:
                self._waited_batch_sizes.append(len(pieces))
        return pieces

    def _wanted(self, job: _Job, now: float) -> bool:
        """Whether a job about to be batched is still wanted; ends it if not."""
        if job.offset == 0 and not job.future.set_running_or_notify_cancel():
            return False  # Its handler withdrew it: the deadline passed while it queued.
        if job.future.done():  # An earlier piece failed.
            return False
        if job.deadline is not None and now >= job.deadline:
            job.future.set_exception(DeadlineExpired(
                f"the deadline passed after {now - job.enqueued:.3f} s in the {self.name} "
                "queue; the request was not run"
            ))
            return False
        if job.is_active is not None and not job.is_active():
            job.future.set_exception(CallerGone("the caller left; the request was not run"))
            return False
        return True

    def _run(self, pieces: list[_Piece]) -> list[_Outcome]:
        """Run one batch; the outcome of every request it completes or fails."""
        graph = pieces[0][0].graph
        first_job, _, first_rows = pieces[0]
        if len(pieces) == 1 and first_rows == first_job.rows:
            inputs = first_job.inputs
        else:
            inputs = np.concatenate([job.inputs[start:start + n] for job, start, n in pieces])
        started = time.monotonic()
        try:
            outputs = graph.run(inputs)
        except Exception as exc:
            outcomes: list[_Outcome] = []
            for job, _, _ in pieces:
                if not job.failed:
                    job.failed = True
                    outcomes.append((job.future, None, exc))
            return outcomes
        finally:
            self._observe(pieces, started, len(inputs))
        outcomes = []
        row = 0
        for job, start, n in pieces:
            part = [output[row:row + n] for output in outputs]
            row += n
            if job.failed:
                continue
            if n < job.rows:  # One piece of a request split across batches.
                job.parts.append(part)
                if start + n < job.rows:
                    continue
                part = [np.concatenate(chunks) for chunks in zip(*job.parts, strict=True)]
            outcomes.append((job.future, part, None))
        return outcomes

    def _fail_everything(self, pieces: list[_Piece], exc: BaseException) -> None:
        """The worker died: the requests of its last batch and every queued one get its error,
        and so will later ones."""
        with self._lock:
            self._failure = exc
            for job, _, _ in pieces:
                _settle(job.future, None, exc)
            self._fail_queued(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        """Give every queued request `exc` and empty the queue; the caller holds the lock."""
        for job in self._pending:
            _settle(job.future, None, exc)
        self._pending.clear()
        self._pending_rows = 0

    def _observe(self, pieces: list[_Piece], started: float, rows: int) -> None:
        self._observe_batch(
            started, rows, (job.enqueued for job, start, _ in pieces if start == 0)
        )

    def _observe_batch(self, started: float, rows: int, enqueued: Iterable[float]) -> None:
        """Record a batch of `rows` rows that started running at `started`, with the times
        its requests (those whose first rows are in it) were queued."""
        metrics = self._metrics
        if metrics is None:
            return
        metrics.inference_seconds.observe(time.monotonic() - started)
        metrics.batch_size.observe(rows)
        for queued in enqueued:
            metrics.queue_wait_seconds.observe(started - queued)


def _settle(
    future: "Future[list[np.ndarray]]", result: list[np.ndarray] | None,
    exc: BaseException | None,
) -> None:
    """End a request's future with its outputs or its error, unless it already ended (its
    handler withdrew it, or an earlier piece failed)."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass
