"""One request's way through batches: its rows taken in pieces, stacked with other requests'
rows into one run, and its outputs split back and reassembled.

Sizes are counted in rows, not requests (as pytriton does): inputs are concatenated on axis 0
and outputs are split back by each request's row count. A request larger than a batch runs in
several pieces, in order, and its outputs are joined once its last piece has run; if a piece
fails, the request fails once and its other pieces are skipped.
"""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Protocol

import numpy as np

from service.errors import CallerGone, DeadlineExpired


class Runnable(Protocol):
    """What a batcher runs: a graph taking (rows, ...) and giving outputs with rows on axis 0."""

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs for `inputs`, each with `len(inputs)` rows."""
        ...


# Whether the caller still waits for the answer; None: always.
IsActive = Callable[[], bool] | None


class Job:
    """One queued request; `offset` of its rows have been taken into batches so far.

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
        enqueued: float,
    ) -> None:
        self.graph = graph
        self.inputs = inputs
        self.rows = len(inputs)
        self.future: Future[list[np.ndarray]] = Future()
        self.deadline = deadline
        self.is_active = is_active
        self.enqueued = enqueued
        self.offset = 0
        self.parts: list[list[np.ndarray]] = []
        self.failed = False

    def still_wanted(self, now: float, queue_name: str) -> bool:
        """Whether the job, about to join a batch, is still wanted; ends it if not."""
        future = self.future
        if self.offset == 0 and not future.set_running_or_notify_cancel():
            return False  # Its handler withdrew it: the deadline passed while it queued.
        if future.done():  # An earlier piece failed.
            return False
        if self.deadline is not None and now >= self.deadline:
            future.set_exception(DeadlineExpired(
                f"the deadline passed after {now - self.enqueued:.3f} s in the {queue_name} "
                "queue; the request was not run"
            ))
            return False
        if self.is_active is not None and not self.is_active():
            future.set_exception(CallerGone("the caller left; the request was not run"))
            return False
        return True


# (job, first row of the job in this batch, rows of the job in this batch)
Piece = tuple[Job, int, int]
# (future, result, exception): the end of one request, set once its last piece has run.
Outcome = tuple[Future[list[np.ndarray]], list[np.ndarray] | None, BaseException | None]


def take_batch(
    queue: deque[Job], max_rows: int, now: float, queue_name: str
) -> tuple[list[Piece], int]:
    """Take up to `max_rows` rows off the front of `queue`, in arrival order, a large request
    filling the room left; requests no longer wanted are dropped on the way. The batch's
    pieces, and how many queued rows left the queue (those dropped included)."""
    pieces: list[Piece] = []
    rows = left = 0
    while queue and rows < max_rows:
        job = queue[0]
        if pieces and job.graph is not pieces[0][0].graph:
            break  # A model swap: a batch never mixes versions.
        if not job.still_wanted(now, queue_name):
            queue.popleft()
            left += job.rows - job.offset
            continue
        take = min(job.rows - job.offset, max_rows - rows)
        pieces.append((job, job.offset, take))
        job.offset += take
        rows += take
        left += take
        if job.offset == job.rows:
            queue.popleft()
    return pieces, left


def stack(pieces: list[Piece]) -> np.ndarray:
    """The batch's inputs: every piece's rows, in order (a whole lone request is not copied)."""
    job, _, rows = pieces[0]
    if len(pieces) == 1 and rows == job.rows:
        return job.inputs
    return np.concatenate([job.inputs[start:start + n] for job, start, n in pieces])


def split_back(pieces: list[Piece], outputs: list[np.ndarray]) -> list[Outcome]:
    """Each request's share of the batch's `outputs`: the outcome of every request the batch
    completes (a split request completes with its last piece)."""
    outcomes: list[Outcome] = []
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


def fail(pieces: list[Piece], exc: BaseException) -> list[Outcome]:
    """The outcome of a batch that failed with `exc`: each of its requests fails, once."""
    outcomes: list[Outcome] = []
    for job, _, _ in pieces:
        if not job.failed:
            job.failed = True
            outcomes.append((job.future, None, exc))
    return outcomes


def settle(
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
