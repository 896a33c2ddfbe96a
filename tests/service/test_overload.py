"""Overload and deadlines: far more callers than the queue holds, and callers that stop waiting.

The excess is refused with RESOURCE_EXHAUSTED without ever entering the queue, the admitted
requests are all answered right within their deadline, and the server is back to normal
afterwards. Requests whose deadline passes while they wait never reach onnxruntime. Rows are
counted with the server's own metrics (`vae_batch_size_sum` is every row onnxruntime ran).

The server here runs one row per onnxruntime call, so 4096-row requests ("blockers") keep the
decoder busy for a good while, and whatever queues behind them waits.
"""

import math
import signal
import time
from collections import Counter
from collections.abc import Iterable

import grpc
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.tensors import to_proto
from tests.traffic import CHANNEL_OPTIONS, answer_bytes

pytestmark = pytest.mark.timeout(180)

# Per crowd request: large, so that the rows the decoder runs while the crowd arrives make room
# for only a few more of them.
ROWS = 1024
BLOCKER_ROWS = 4096
# The blockers keep the decoder busy many times longer than the crowd takes to arrive.
BLOCKERS = 8
CROWD = 120
DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="module")
def server(start_vae_server):
    """One row per onnxruntime run; the queue holds the blockers and a few crowd requests."""
    return start_vae_server(
        VAE_MAX_BATCH_SIZE="1", VAE_MAX_QUEUE=str(BLOCKERS * BLOCKER_ROWS + 4 * ROWS),
        VAE_INTRA_OP_THREADS="1",
    )


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


class Sent:
    """A call sent without waiting for it, and the monotonic time it came back."""

    def __init__(self, stub, request, timeout: float) -> None:
        self.request = request
        self.returned_at = math.inf
        method = getattr(stub, type(request).__name__.removesuffix("Request"))
        self.future = method.future(request, timeout=timeout)
        self.future.add_done_callback(self._returned)

    def _returned(self, future: grpc.Future) -> None:
        self.returned_at = time.monotonic()

    def code(self) -> str:
        """"OK" or the name of the status code, once the call has ended."""
        error = self.future.exception()
        return "OK" if error is None else error.code().name


def send(stub, requests: Iterable, timeout: float) -> list[Sent]:
    return [Sent(stub, request, timeout) for request in requests]


def blockers(count: int) -> list[vae_pb2.SampleRequest]:
    return [vae_pb2.SampleRequest(count=BLOCKER_ROWS, seed=k) for k in range(count)]


def send_blockers(server, stub, count: int) -> list[Sent]:
    """Send `count` blockers; returns once the decoder has started on them."""
    batches = server.metric("vae_batch_size_count", graph="decoder")
    sent = send(stub, blockers(count), 120)
    server.wait_for_metric("vae_batch_size_count", batches + 1, graph="decoder")
    return sent


def rows_run(server) -> float:
    """Rows the decoder's onnxruntime session has run so far."""
    return server.metric("vae_batch_size_sum", graph="decoder")


def test_excess_callers_are_refused_at_once_and_every_admitted_one_is_answered_right(
    server, stub
) -> None:
    requests = [vae_pb2.SampleRequest(count=ROWS, seed=seed) for seed in range(3)]
    reference = {id(r): answer_bytes(stub.Sample(r, timeout=30)) for r in requests}
    before = rows_run(server)
    waits_before = server.metric("vae_queue_wait_seconds_count", graph="decoder")
    refused_before = server.metric("grpc_server_handled_total", grpc_method="Sample",
                                   grpc_code="ResourceExhausted")

    blocked = send_blockers(server, stub, BLOCKERS)
    crowd = send(stub, (requests[i % 3] for i in range(CROWD)), DEADLINE_SECONDS)

    assert [call.code() for call in blocked] == ["OK"] * BLOCKERS
    seen = Counter(call.code() for call in crowd)
    assert set(seen) == {"OK", "RESOURCE_EXHAUSTED"}, seen
    assert seen["RESOURCE_EXHAUSTED"] > CROWD / 2, seen
    refused = [call for call in crowd if call.code() != "OK"]
    admitted = [call for call in crowd if call.code() == "OK"]
    assert all("queue is full" in call.future.exception().details() for call in refused)
    # At once: every admitted request waited for the blockers, and every refusal came back
    # before the first of them.
    assert max(c.returned_at for c in refused) < min(c.returned_at for c in admitted)
    # The admitted got the same answer as when asked alone, within their deadline.
    assert all(answer_bytes(c.future.result()) == reference[id(c.request)] for c in admitted)
    # Refused rows never queued and never ran; admitted rows ran exactly once.
    assert rows_run(server) - before == BLOCKERS * BLOCKER_ROWS + ROWS * len(admitted)
    waits = server.metric("vae_queue_wait_seconds_count", graph="decoder") - waits_before
    assert waits == BLOCKERS + len(admitted)
    assert server.metric("grpc_server_handled_total", grpc_method="Sample",
                         grpc_code="ResourceExhausted") - refused_before == len(refused)
    # Back to normal: nothing left queued, SERVING, and a request is answered as before.
    assert server.metric("vae_queue_depth", graph="decoder") == 0
    assert server.health() == "SERVING"
    assert answer_bytes(stub.Sample(requests[0], timeout=30)) == reference[id(requests[0])]


def test_requests_whose_deadline_passes_in_the_queue_never_reach_onnxruntime(
    server, stub
) -> None:
    late_requests = [vae_pb2.SampleRequest(count=1, seed=k) for k in range(20)]
    before = rows_run(server)
    started = server.metric("grpc_server_started_total", grpc_method="Sample")
    handled = server.metric("grpc_server_handled_total", grpc_method="Sample")

    def dropped() -> float:
        return sum(server.metric("grpc_server_handled_total", grpc_method="Sample",
                                 grpc_code=code) for code in ("DeadlineExceeded", "Canceled"))

    dropped_before = dropped()
    blocked = send_blockers(server, stub, 4)
    late = send(stub, late_requests, 1.0)
    # Once every late request is in its handler, it is in the queue behind the blockers. Then
    # the server is frozen until their deadline has passed, so it passes in the queue however
    # fast the machine runs the blockers.
    server.wait_for_metric("grpc_server_started_total", started + len(blocked) + len(late),
                           grpc_method="Sample")
    server.signal(signal.SIGSTOP)
    try:
        expired = Counter(call.code() for call in late)
    finally:
        server.signal(signal.SIGCONT)

    assert [call.code() for call in blocked] == ["OK"] * len(blocked)
    assert expired == {"DEADLINE_EXCEEDED": len(late)}
    # Each dropped call is counted once its handler has ended, which may come after the
    # blockers' answers. A call whose client gave up first (the client's deadline fires a few
    # ms before the server's, taken on arrival) ends as a cancellation: on the wire the two
    # cannot be told apart, so the server counts it Canceled.
    server.wait_for_metric("grpc_server_handled_total", handled + len(blocked) + len(late),
                           grpc_method="Sample")
    assert dropped() - dropped_before == len(late)
    # The only rows run were the blockers'.
    assert rows_run(server) - before == len(blocked) * BLOCKER_ROWS
    assert server.metric("vae_queue_depth", graph="decoder") == 0
    assert server.health() == "SERVING"


def test_latent_space_calls_whose_deadline_passes_in_the_queue_never_reach_the_decoder(
    server, stub, heldout
) -> None:
    # Score encodes at once (nothing blocks the encoder), then queues its draws for the decoder
    # behind the blockers, where its deadline passes.
    late_requests = [
        vae_pb2.ScoreRequest(images=to_proto(heldout[k:k + 4]), samples=16, seed=k)
        for k in range(10)
    ]
    before = rows_run(server)
    started = server.metric("grpc_server_started_total", grpc_method="Score")
    handled = server.metric("grpc_server_handled_total", grpc_method="Score")
    blocked = send_blockers(server, stub, 4)
    late = send(stub, late_requests, 1.0)
    server.wait_for_metric("grpc_server_started_total", started + len(late), grpc_method="Score")
    server.signal(signal.SIGSTOP)
    try:
        expired = Counter(call.code() for call in late)
    finally:
        server.signal(signal.SIGCONT)

    assert [call.code() for call in blocked] == ["OK"] * len(blocked)
    assert expired == {"DEADLINE_EXCEEDED": len(late)}
    server.wait_for_metric("grpc_server_handled_total", handled + len(late), grpc_method="Score")
    assert rows_run(server) - before == len(blocked) * BLOCKER_ROWS
    assert server.health() == "SERVING"
