"""Overload: far more callers than the queue holds.

The excess is refused with RESOURCE_EXHAUSTED without ever entering the queue, the admitted
requests are all answered right within their deadline, and the server is back to normal
afterwards. Requests whose deadline passes while they wait never reach onnxruntime. Rows
are counted with the server's own metrics (`vae_batch_size_sum` is every row onnxruntime ran).
"""

import asyncio
import signal
import time
from collections import Counter

import grpc
import pytest
from reliability_tools import CHANNEL_OPTIONS, answer_bytes, metric, wait_for_metric
from vae.v1 import vae_pb2, vae_pb2_grpc

pytestmark = pytest.mark.timeout(180)

# Per crowd request: large, so that the rows the decoder runs while the crowd arrives make room
# for only a few more of them.
ROWS = 1024
BLOCKER_ROWS = 4096
# The servers here run one row per onnxruntime call: this many blockers keep the decoder busy
# for about a second, long after the crowd has arrived.
BLOCKERS = 8
CROWD = 120
DEADLINE_SECONDS = 30.0


async def crowd(target: str, calls, timeout: float):
    """Send every (method, request) at once; (method, request, response or error, the
    monotonic time it came back) for each."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)

        async def one(method, request):
            try:
                result = await getattr(stub, method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                result = error
            return method, request, result, time.monotonic()

        return await asyncio.gather(*(one(method, request) for method, request in calls))


def code_of(result) -> str:
    return result.code().name if isinstance(result, grpc.aio.AioRpcError) else "OK"


def rows_run(server) -> float:
    """Rows the decoder's onnxruntime session has run so far."""
    return metric(server, "vae_batch_size_sum", graph="decoder")


async def behind_a_blocker(server, blockers, calls, timeout: float):
    """Send `blockers`; once the decoder runs them, send `calls` at once. The outcomes of both.

    The servers here run one row per onnxruntime call, so 4096-row requests keep the decoder
    busy for a good while, and whatever queues behind them waits."""
    batches = metric(server, "vae_batch_size_count", graph="decoder")
    blocking = asyncio.ensure_future(crowd(server.target, blockers, 120))
    await asyncio.to_thread(
        wait_for_metric, server, "vae_batch_size_count", batches + 1, graph="decoder"
    )
    crowded = await crowd(server.target, calls, timeout)
    return await blocking, crowded


def test_excess_callers_are_refused_at_once_and_every_admitted_one_is_answered_right(
    start_vae_server,
) -> None:
    # The queue holds the blockers and room for a few crowd requests more.
    server = start_vae_server(
        VAE_MAX_BATCH_SIZE="1", VAE_MAX_QUEUE=str(BLOCKERS * BLOCKER_ROWS + 4 * ROWS),
        VAE_INTRA_OP_THREADS="1",
    )
    requests = [vae_pb2.SampleRequest(count=ROWS, seed=seed) for seed in range(3)]
    reference = {
        id(request): answer_bytes(result)
        for request in requests
        for _, _, result, _ in asyncio.run(crowd(server.target, [("Sample", request)], 30))
    }
    before = rows_run(server)
    waits_before = metric(server, "vae_queue_wait_seconds_count", graph="decoder")
    blockers = [("Sample", vae_pb2.SampleRequest(count=BLOCKER_ROWS, seed=k))
                for k in range(BLOCKERS)]
    calls = [("Sample", requests[i % 3]) for i in range(CROWD)]

    blocked, results = asyncio.run(behind_a_blocker(server, blockers, calls, DEADLINE_SECONDS))

    seen = Counter(code_of(result) for _, _, result, _ in results)
    assert set(seen) == {"OK", "RESOURCE_EXHAUSTED"}, seen
    assert seen["RESOURCE_EXHAUSTED"] > CROWD / 2, seen
    refused = [(error, at) for _, _, error, at in results if code_of(error) != "OK"]
    admitted = [(request, response, at) for _, request, response, at in results
                if code_of(response) == "OK"]
    assert all("queue is full" in error.details() for error, _ in refused)
    # At once: every admitted request waited for the blocker, and every refusal came back
    # before the first of them.
    assert [code_of(result) for _, _, result, _ in blocked] == ["OK"] * BLOCKERS
    last_refusal, first_admitted = max(at for _, at in refused), min(at for *_, at in admitted)
    print(f"last refusal {first_admitted - last_refusal:.3f} s before the first admitted")
    assert last_refusal < first_admitted
    # The admitted got the same answer as when asked alone, within their deadline.
    assert all(answer_bytes(response) == reference[id(request)]
               for request, response, _ in admitted)
    # Refused rows never queued and never ran; admitted rows ran exactly once.
    assert rows_run(server) - before == BLOCKERS * BLOCKER_ROWS + ROWS * len(admitted)
    waits = metric(server, "vae_queue_wait_seconds_count", graph="decoder") - waits_before
    assert waits == BLOCKERS + len(admitted)
    assert metric(server, "grpc_server_handled_total", grpc_method="Sample",
                  grpc_code="ResourceExhausted") == len(refused)
    # Back to normal: nothing left queued, SERVING, and a request is answered as before.
    assert metric(server, "vae_queue_depth", graph="decoder") == 0
    assert server.health() == "SERVING"
    (_, request, result, _), = asyncio.run(crowd(server.target, [calls[0]], 30))
    assert answer_bytes(result) == reference[id(request)]


def test_requests_whose_deadline_passes_in_the_queue_never_reach_onnxruntime(
    start_vae_server,
) -> None:
    server = start_vae_server(
        VAE_MAX_BATCH_SIZE="1", VAE_MAX_QUEUE=str(2 * BLOCKER_ROWS + 64), VAE_INTRA_OP_THREADS="1"
    )
    blockers = [("Sample", vae_pb2.SampleRequest(count=BLOCKER_ROWS, seed=k)) for k in range(2)]
    late = [("Sample", vae_pb2.SampleRequest(count=1, seed=k)) for k in range(20)]
    before = rows_run(server)
    batches = metric(server, "vae_batch_size_count", graph="decoder")
    started = metric(server, "grpc_server_started_total", grpc_method="Sample")

    async def scenario():
        blocking = asyncio.ensure_future(crowd(server.target, blockers, 120))
        await asyncio.to_thread(
            wait_for_metric, server, "vae_batch_size_count", batches + 1, graph="decoder"
        )
        expiring = asyncio.ensure_future(crowd(server.target, late, 1.0))
        # Once every late request is in its handler, it is in the queue behind the blockers.
        # Then the server is frozen until their deadline has passed, so it passes in the
        # queue however fast the machine runs the blockers.
        await asyncio.to_thread(
            wait_for_metric, server, "grpc_server_started_total", started + len(blockers)
            + len(late), grpc_method="Sample"
        )
        server.signal(signal.SIGSTOP)
        try:
            expired = await expiring
        finally:
            server.signal(signal.SIGCONT)
        return await blocking, expired

    blocked, expired = asyncio.run(scenario())

    assert [code_of(result) for _, _, result, _ in blocked] == ["OK"] * len(blockers)
    assert Counter(code_of(result) for *_, result, _ in expired) == {"DEADLINE_EXCEEDED": 20}
    # Each dropped call is counted once its handler has ended, which may come after the
    # blockers' answers. A call whose client gave up first (the client's deadline fires a few
    # ms before the server's, taken on arrival) ends as a cancellation: on the wire the two
    # cannot be told apart, so the server counts it Canceled.
    def dropped() -> float:
        return sum(metric(server, "grpc_server_handled_total", grpc_method="Sample",
                          grpc_code=code) for code in ("DeadlineExceeded", "Canceled"))

    deadline = time.monotonic() + 30
    while dropped() < len(late) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dropped() == len(late)
    # The only rows run were the blockers'.
    assert rows_run(server) - before == len(blockers) * BLOCKER_ROWS
    assert metric(server, "vae_queue_depth", graph="decoder") == 0
    assert server.health() == "SERVING"
