"""Shutdown: on SIGTERM nothing admitted is lost.

In process, InFlightRequests: a drain waits for the admitted requests, gives up after the grace,
and refuses new ones meanwhile. End to end, callers keep sending seeded requests through the
SIGTERM, each until it is refused: health turns NOT_SERVING, every request the server admitted
is answered with its reference answer, every other one is refused with UNAVAILABLE before it is
admitted, and the process exits 0 within the grace period, even when a second SIGTERM and a
SIGHUP arrive during the drain.
"""

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vae.v1 import vae_pb2

from service.errors import ShuttingDown
from service.instrumentation import InFlightRequests
from tests.traffic import Traffic, seeded_requests

pytestmark = pytest.mark.timeout(120)

GRACE_SECONDS = 20
# What a refusal before admission says: the drain's own answer, or no server to connect to.
REFUSALS = ("the server is shutting down", "failed to connect", "Connection refused")


def test_a_drain_with_nothing_in_flight_ends_at_once() -> None:
    assert InFlightRequests().drain(timeout_seconds=0) is True


def test_a_drain_waits_until_the_last_admitted_request_has_ended() -> None:
    requests = InFlightRequests()
    requests.begin()
    requests.begin()
    drained: list[bool] = []
    drainer = threading.Thread(target=lambda: drained.append(requests.drain(60)))
    drainer.start()
    requests.end()
    drainer.join(0.1)  # Whenever the drain began, one request is still in flight.
    assert drained == []
    requests.end()
    drainer.join(10)
    assert drained == [True] and requests.count == 0


def test_a_drain_gives_up_after_the_grace_and_refuses_new_requests_meanwhile() -> None:
    requests = InFlightRequests()
    requests.begin()
    assert requests.drain(timeout_seconds=0.01) is False
    with pytest.raises(ShuttingDown):
        requests.begin()
    assert requests.count == 1  # the refused request was never counted
    requests.end()
    assert requests.drain(timeout_seconds=0) is True


def watch_health(target: str, statuses: list[str]) -> threading.Thread:
    """Follow the server's overall health with Watch, appending each status, until the stream
    ends (the server is gone)."""
    ready = threading.Event()

    def follow() -> None:
        with grpc.insecure_channel(target) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            try:
                for response in stream:
                    statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(
                        response.status))
                    ready.set()
            except grpc.RpcError:
                pass  # the server went away: the end of the stream
            ready.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert ready.wait(30), "no health status came"
    return thread


def test_sigterm_under_load_loses_no_admitted_request_and_exits_0_in_the_grace_period(
    start_vae_server, heldout
) -> None:
    # One row per onnxruntime run: a 4096-row request is still running when SIGTERM comes,
    # and the callers' requests queue up behind it.
    server = start_vae_server(
        VAE_GRACE_SECONDS=str(GRACE_SECONDS), VAE_MAX_BATCH_SIZE="1", VAE_INTRA_OP_THREADS="1"
    )
    long_call = [("Sample", vae_pb2.SampleRequest(count=4096, seed=3))]
    health: list[str] = []
    watcher = watch_health(server.target, health)
    traffic = Traffic(server.target, seeded_requests(heldout, rows=(1, 16)), callers=4,
                      stop_on=lambda error: error.code() == grpc.StatusCode.UNAVAILABLE)
    long_traffic = Traffic(server.target, long_call, callers=1,
                           stop_on=lambda error: error.code() == grpc.StatusCode.UNAVAILABLE)
    with traffic:
        traffic.wait_answered(len(traffic.calls))
        with long_traffic:
            server.wait_for_metric("vae_queue_depth", 1024, graph="decoder")
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            draining = server.wait_for_log("draining", timeout=10)
            # Neither may cut the drain short.
            server.signal(signal.SIGTERM)
            server.signal(signal.SIGHUP)
            assert server.wait_exit(timeout=GRACE_SECONDS + 10) == 0
            exited = time.monotonic()
    watcher.join(10)

    assert exited - signalled < GRACE_SECONDS
    assert draining["in_flight"] >= 1
    # NOT_SERVING as soon as the drain starts, and nothing else after it.
    assert health == ["SERVING", "NOT_SERVING"]
    # "stopped" after "draining", not the warning that requests were cancelled when the grace
    # ran out.
    messages = [record["message"] for record in server.records()]
    assert messages.index("draining") < messages.index("stopped")
    # Every admitted request was answered right; each caller's one failure is its refusal.
    for log in traffic.logs + long_traffic.logs:
        assert log.wrong == []
        assert log.outcomes[:-1] == ["OK"] * (len(log.outcomes) - 1)
        (refusal,) = log.errors
        assert refusal.split(": ")[1] == "UNAVAILABLE"
        assert any(words in refusal for words in REFUSALS), refusal
    assert long_traffic.logs[0].outcomes[0] == "OK"
