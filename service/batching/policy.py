"""When the batcher runs a request inline, and how long it holds a partial batch open.

Each batch costs two thread hand-offs and one onnxruntime call whatever its size. Under load,
fewer and larger batches leave more CPU for the requests; without load, any wait is pure
latency. The policy weighs the two:

- Inline: a small request that finds the server otherwise idle (no other call in it, nothing
  queued, the worker free) runs on its own handler thread. A run that small costs about as
  much as the two hand-offs to the worker and back, so skipping them keeps a lone caller's
  latency at the gRPC floor plus the inference itself.
- Hold: when the worker is free a batch goes at once, so a request that arrives alone never
  waits, unless the batcher is under load. Then a partial batch may stay open up to
  `max_delay_seconds` (from its oldest request) to fill, and closes sooner once arrivals pause
  for `pause_fraction` of that. "Under load" means most recent arrivals found company: the
  worker busy, requests queued, or other calls in the server (a moving average), which a
  single caller sending one request after another never does.
- Group of callers: callers that send their next request when the last one returns come back
  in groups, and once a group is back nothing more is on its way: waiting for a pause then
  only idles the CPU. So a held batch also closes as soon as every call in the server waits in
  it and it is as large as the largest of the last few batches that closed by waiting (the
  group's size). The group's size is only learned from batches that waited, and one batch in
  `always_wait_every` waits regardless, so a group that grows is seen.

The policy is plain state and decisions, with no threads and no locks: its batcher calls it
under its own lock, and its tests drive it with a fake clock.
"""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class BatchPolicySettings:
    """The policy's parameters (see the module's docstring for what each trades)."""

    # Under load, the longest a partial batch waits to fill, from its oldest request; 0: never.
    max_delay_seconds: float = 0.0
    # Up to this many rows a request alone in the server runs on its handler thread: a run this
    # small is dominated by reading the weights, not by the rows.
    inline_max_rows: int = 16
    # How much each arrival moves the load average: a few lone arrivals end the load.
    load_weight: float = 0.25
    # Above this load average the batcher is under load and partial batches may wait.
    load_threshold: float = 0.5
    # A held batch closes once no request has arrived for this fraction of max_delay_seconds.
    pause_fraction: float = 0.25
    # The group's size is the largest of this many recent batches that closed by waiting...
    group_memory: int = 8
    # ...and one batch in this many waits however large it is, so that a larger group is seen.
    always_wait_every: int = 8


class BatchPolicy:
    """The decisions of one batcher; one instance per batcher, called under its lock."""

    def __init__(self, settings: BatchPolicySettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        # Moving average over arrivals of "found company" (1) or not (0).
        self._load = 0.0
        self._last_arrival = clock()
        # Requests in each of the last batches that closed by waiting; batches formed so far.
        self._waited_batch_sizes: deque[int] = deque(maxlen=settings.group_memory)
        self._batches_formed = 0

    @property
    def under_load(self) -> bool:
        """Whether most recent arrivals found company (the moving average is above threshold)."""
        return self._load > self.settings.load_threshold

    def arrive(
        self, rows: int, *, worker_busy: bool, queued_requests: int, calls_in_flight: int
    ) -> bool:
        """Record a request of `rows` rows arriving now; whether it should run inline, on its
        caller's thread. `calls_in_flight` counts the calls in the server, this one included."""
        settings = self.settings
        company = worker_busy or queued_requests > 0 or calls_in_flight > 1
        self._load += settings.load_weight * (company - self._load)
        self._last_arrival = self.clock()
        return (
            not company
            and rows <= settings.inline_max_rows
            and (not self.under_load or not settings.max_delay_seconds)
        )

    def hold_until(
        self, *, queued_requests: int, oldest_arrival: float, calls_in_flight: int
    ) -> float | None:
        """Until when the queued partial batch may stay open to fill; None: it is not held and
        goes now. The instant may have passed: then the hold is over and the batch goes, having
        waited. `oldest_arrival` is the clock's reading when its oldest request arrived."""
        settings = self.settings
        if (
            not self.under_load
            or not settings.max_delay_seconds
            or self._group_is_back(queued_requests, calls_in_flight)
        ):
            return None
        return min(
            oldest_arrival + settings.max_delay_seconds,
            self._last_arrival + settings.max_delay_seconds * settings.pause_fraction,
        )

    def batch_formed(self, requests: int, *, waited: bool) -> None:
        """Record a batch of `requests` requests about to run; `waited` when it was held open
        until its hold was over (inline runs count as batches that did not wait)."""
        self._batches_formed += 1
        if waited:
            self._waited_batch_sizes.append(requests)

    def _group_is_back(self, queued_requests: int, calls_in_flight: int) -> bool:
        """Whether the held batch has every caller it waits for (see the module's docstring)."""
        if (
            not self._waited_batch_sizes
            or self._batches_formed % self.settings.always_wait_every == 0
        ):
            return False
        return (
            queued_requests >= max(self._waited_batch_sizes)
            and queued_requests >= calls_in_flight
        )
