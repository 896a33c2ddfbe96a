"""The load itself, in one process: channels, workers, and one sample per call.

Requests are pre-serialized bytes sent through a method without serializers, and responses stay
bytes, so the client spends its time on gRPC rather than on protobuf.

Closed loop (ghz's model): `concurrency` workers, each sending its next request when the last
one is answered. Open loop (with `rps`): arrival j is due at start + j/rps whatever the server
does, and its latency runs from that intended time, so a stalled server shows as a long tail
instead of as fewer, fast samples (coordinated omission); it is sent by the worker that has been
idle longest, so at most `concurrency` calls are in flight.

Worker k sends over connection k mod `connections`, as in ghz: the workers are dealt out evenly
over the connections, and a connection carries only its own workers' calls. A server that
balances per connection (worker processes sharing a port, a Service's pods) then gets the load
the way ghz would give it.

A server-streaming method is called as ghz calls it: one call sends the request and reads
every message to the stream's end, and counts once, by the status the stream ended with; its
latency runs to that end. ghz's --stream-call-count and --stream-call-duration have the client
cancel a stream early (as each message arrives, ghz checks whether it has had that many, or
that long), and such a stream counts as Canceled, as ghz counts it.

A timed run ends as ghz's --duration-stop says: "wait" sends nothing new and lets the calls in
flight finish; "close" cuts them and counts each as failed, as ghz does when it closes its
connections under them; "ignore" cuts them and leaves them out of the report.
"""

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from loadtest.config import DurationStop

# Large responses (Sample count 4096 is ~12.8 MB) must not hit gRPC's 4 MB default; each
# channel is its own connection, as ghz's --connections means.
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
)


class ConnectError(ConnectionError):
    """The target could not be reached within the connect timeout."""


@dataclass(frozen=True)
class Security:
    """How to connect: plaintext, or TLS with optional root certificates and a client cert."""

    insecure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    cname: str = ""


def open_channel(target: str, security: Security) -> grpc.aio.Channel:
    """A channel of its own connection to `target`, plaintext or TLS as `security` says."""
    if security.insecure:
        return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(security.cacert),
        private_key=read(security.key),
        certificate_chain=read(security.cert),
    )
    options: tuple[tuple[str, int | str], ...] = _CHANNEL_OPTIONS
    if security.cname:
        options += (("grpc.ssl_target_name_override", security.cname),)
    return grpc.aio.secure_channel(target, credentials, options=options)


async def connect(target: str, security: Security, timeout_s: float) -> grpc.aio.Channel:
    """An open channel to `target`, ready to send, or ConnectError."""
    channel = open_channel(target, security)
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s or None)
    except TimeoutError:
        await channel.close()
        raise ConnectError(f"cannot connect to {target} within {timeout_s:g} s") from None
    return channel


@dataclass(frozen=True)
class Share:
    """The part of a run that one process sends."""

    target: str
    security: Security
    path: str
    payloads: tuple[bytes, ...]
    concurrency: int
    connections: int
    total: int  # calls (closed loop) or arrivals (open loop) of the whole run; 0: by duration
    duration_s: float
    duration_stop: DurationStop  # what happens to the calls in flight when duration_s is up
    timeout_s: float
    connect_timeout_s: float
    rps: float  # of the whole run; this process takes every `stride`-th arrival
    metadata: tuple[tuple[str, str], ...]
    index: int  # this process's place among `stride` processes
    stride: int
    server_streaming: bool = False  # one call reads the whole stream
    stream_call_count: int = 0  # messages after which a stream is cancelled; 0: none
    stream_call_duration_s: float = 0.0  # time after which a stream is cancelled; 0: none


async def open_channels(share: Share) -> list[grpc.aio.Channel]:
    """This share's connections, each ready to send."""
    return [
        await connect(share.target, share.security, share.connect_timeout_s)
        for _ in range(share.connections)
    ]


@dataclass
class Samples:
    """One row per call: when it was (due to be) sent, how long it took, how it ended."""

    start_ns: np.ndarray  # int64, time.monotonic_ns(): intended (open loop) or actual send
    latency_ns: np.ndarray  # int64
    status: np.ndarray  # int16, grpc.StatusCode value
    error: np.ndarray  # int32, index into `errors`, -1 for none
    errors: list[str]
    cpu_s: float = 0.0  # user+system CPU time of the process(es) that sent them

    @staticmethod
    def merge(parts: Sequence["Samples"]) -> "Samples":
        """All rows of `parts`, with their error texts renumbered into one list."""
        errors: list[str] = []
        error_ids = []
        for part in parts:
            lookup = np.array([*_intern_all(errors, part.errors), -1], dtype=np.int32)
            error_ids.append(lookup[part.error])
        return Samples(
            start_ns=np.concatenate([p.start_ns for p in parts]),
            latency_ns=np.concatenate([p.latency_ns for p in parts]),
            status=np.concatenate([p.status for p in parts]),
            error=np.concatenate(error_ids),
            errors=errors,
            cpu_s=sum(p.cpu_s for p in parts),
        )


def _intern_all(errors: list[str], texts: list[str]) -> list[int]:
    ids = []
    for text in texts:
        if text not in errors:
            errors.append(text)
        ids.append(errors.index(text))
    return ids


# Go's names for the status codes, which ghz prints and writes into its JSON.
GO_CODE_NAMES = {
    code.value[0]: "".join(part.title() for part in code.name.split("_"))
    for code in grpc.StatusCode
}
GO_CODE_NAMES[grpc.StatusCode.CANCELLED.value[0]] = "Canceled"
GO_CODE_NAMES[grpc.StatusCode.OK.value[0]] = "OK"

# What ghz reports for a stream it cancelled itself (a stream-call-count or -duration reached):
# gRPC-Go's error for a call whose context was cancelled.
CANCELLED_BY_STREAM_LIMIT = "rpc error: code = Canceled desc = context canceled"

# What ghz reports for a call whose connection it closed at the end of a timed run: gRPC-Go's
# read error, less the socket addresses ("read tcp A->B: ") that would split it per connection.
CUT_AT_DURATION_END = (
    "rpc error: code = Unavailable desc = error reading from server: "
    "use of closed network connection"
)


class _Recorder:
    def __init__(self) -> None:
        self.start_ns: list[int] = []
        self.latency_ns: list[int] = []
        self.status: list[int] = []
        self.error: list[int] = []
        self._error_ids: dict[str, int] = {}

    def add(self, start_ns: int, end_ns: int, status: int, error: str) -> None:
        self.start_ns.append(start_ns)
        self.latency_ns.append(end_ns - start_ns)
        self.status.append(status)
        self.error.append(self._error_ids.setdefault(error, len(self._error_ids)) if error else -1)

    def samples(self) -> Samples:
        return Samples(
            start_ns=np.array(self.start_ns, dtype=np.int64),
            latency_ns=np.array(self.latency_ns, dtype=np.int64),
            status=np.array(self.status, dtype=np.int16),
            error=np.array(self.error, dtype=np.int32),
            errors=list(self._error_ids),
        )


# One call: the worker sending it, its number in the run, and the monotonic time its latency
# counts from.
_Call = Callable[[int, int, int], Awaitable[None]]


async def run_share(share: Share, channels: Sequence[grpc.aio.Channel], start_ns: int) -> Samples:
    """Send this process's share of the load from `start_ns` (monotonic) on, and record it."""
    calls: Sequence[grpc.aio.UnaryUnaryMultiCallable | grpc.aio.UnaryStreamMultiCallable] = [
        channel.unary_stream(share.path) if share.server_streaming
        else channel.unary_unary(share.path)
        for channel in channels
    ]
    timeout = share.timeout_s or None
    metadata = share.metadata or None
    payloads = share.payloads
    recorder = _Recorder()
    ok = grpc.StatusCode.OK.value[0]
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    cancelled = grpc.StatusCode.CANCELLED.value[0]
    end_ns = start_ns + int(share.duration_s * 1e9) if share.duration_s else 0
    cut_at_end = bool(end_ns) and share.duration_stop != "wait"
    in_flight: set[grpc.aio.Call] = set()
    cut: set[grpc.aio.Call] = set()

    async def call(worker: int, number: int, start: int) -> None:
        if cut_at_end and time.monotonic_ns() >= end_ns:
            return  # an open-loop arrival that got its turn too late: the run is over
        rpc = calls[worker % len(calls)](
            payloads[number % len(payloads)], timeout=timeout, metadata=metadata
        )
        in_flight.add(rpc)
        try:
            if isinstance(rpc, grpc.aio.UnaryStreamCall):
                ran_to_its_end = await _read_stream(rpc, share)
            else:
                await rpc
                ran_to_its_end = True
        except grpc.aio.AioRpcError as error:
            code = error.code()
            text = f"rpc error: code = {GO_CODE_NAMES[code.value[0]]} desc = {error.details()}"
            recorder.add(start, time.monotonic_ns(), code.value[0], text)
        except asyncio.CancelledError:
            # A locally cancelled call raises this in its caller; only ours is expected.
            if rpc not in cut:
                raise
            if share.duration_stop == "close":
                recorder.add(start, time.monotonic_ns(), unavailable, CUT_AT_DURATION_END)
        else:
            if ran_to_its_end:
                recorder.add(start, time.monotonic_ns(), ok, "")
            else:
                recorder.add(start, time.monotonic_ns(), cancelled, CANCELLED_BY_STREAM_LIMIT)
        finally:
            in_flight.discard(rpc)

    async def cut_when_time_is_up() -> None:
        await _sleep_until(end_ns)
        for rpc in list(in_flight):
            if rpc.cancel():  # False when it has just ended: it then counts as it ended
                cut.add(rpc)

    await _sleep_until(start_ns)
    cutter = asyncio.create_task(cut_when_time_is_up()) if cut_at_end else None
    try:
        if share.rps:
            await _open_loop(share, start_ns, call)
        else:
            await _closed_loop(share, end_ns, call)
    finally:
        if cutter:
            cutter.cancel()
    return recorder.samples()


async def _read_stream(rpc: grpc.aio.UnaryStreamCall, share: Share) -> bool:
    """Read a server stream to its end: True when it ended OK (a stream that fails raises as a
    unary call does), False when the share's stream-call count or duration cancelled it first.

    As in ghz, the limits are checked as each message arrives: a duration is noticed at the
    first message after it. A stream that ended just before its cancellation counts as ended.
    """
    opened_ns = time.monotonic_ns()
    duration_ns = int(share.stream_call_duration_s * 1e9)
    received = 0
    async for _message in rpc:
        received += 1
        enough = share.stream_call_count and received >= share.stream_call_count
        too_long = duration_ns and time.monotonic_ns() - opened_ns >= duration_ns
        if (enough or too_long) and rpc.cancel():
            return False
    return True


async def _closed_loop(share: Share, end_ns: int, call: _Call) -> None:
    # Calls are numbered across processes (this process takes every stride-th number), so that
    # the payloads go round-robin over the whole run as in ghz.
    numbers: Iterator[int]
    if end_ns:
        numbers = itertools.count(share.index, share.stride)
    else:
        numbers = iter(range(share.index, share.total, share.stride))

    async def worker(index: int) -> None:
        for number in numbers:
            start = time.monotonic_ns()
            if end_ns and start >= end_ns:
                return
            await call(index, number, start)

    await asyncio.gather(*(worker(index) for index in range(share.concurrency)))


async def _open_loop(share: Share, start_ns: int, call: _Call) -> None:
    arrivals = share.total if not share.duration_s else math.floor(share.duration_s * share.rps)
    interval_ns = 1e9 / share.rps
    # First in, first out: the worker idle longest sends the next arrival, as the longest
    # waiting of ghz's workers receives its next tick.
    idle: asyncio.Queue[int] = asyncio.Queue()
    for worker in range(share.concurrency):
        idle.put_nowait(worker)
    tasks: set[asyncio.Task] = set()

    async def one(worker: int, number: int, due_ns: int) -> None:
        try:
            await call(worker, number, due_ns)
        finally:
            idle.put_nowait(worker)

    for number in range(share.index, arrivals, share.stride):
        due_ns = start_ns + int(number * interval_ns)
        await _sleep_until(due_ns)
        # When every worker has a call in flight the next one waits here; its latency still
        # counts from its due time, so the wait is measured, not hidden.
        worker = await idle.get()
        task = asyncio.create_task(one(worker, number, due_ns))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def _sleep_until(when_ns: int) -> None:
    delay_ns = when_ns - time.monotonic_ns()
    if delay_ns > 0:
        await asyncio.sleep(delay_ns / 1e9)
