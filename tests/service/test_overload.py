"""Overload and deadlines: a full queue refuses at once, expired requests never run."""

import asyncio
from collections import Counter

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vae.v1 import vae_pb2, vae_pb2_grpc

pytestmark = pytest.mark.timeout(180)


def sample_value(metrics_text: str, name: str, labels: dict[str, str]) -> float:
    """One sample of a scraped /metrics page (0 when absent)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def flood(target: str, request, calls: int, timeout: float) -> list[grpc.RpcError | object]:
    """Send `calls` copies of a Sample request at once; the responses or errors."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        return await asyncio.gather(
            *(stub.Sample(request, timeout=timeout) for _ in range(calls)),
            return_exceptions=True,
        )


def codes(outcomes) -> Counter:
    return Counter(
        o.code().name if isinstance(o, grpc.aio.AioRpcError) else "OK" for o in outcomes
    )


def test_a_full_queue_refuses_with_resource_exhausted_and_the_server_recovers(
    start_vae_server,
) -> None:
    server = start_vae_server(VAE_MAX_QUEUE="8", VAE_MAX_REQUEST_ROWS="8", VAE_MAX_BATCH_SIZE="8")
    request = vae_pb2.SampleRequest(count=8, seed=1)
    outcomes = asyncio.run(flood(server.target, request, calls=200, timeout=30))
    seen = codes(outcomes)
    assert set(seen) == {"OK", "RESOURCE_EXHAUSTED"}, seen
    refused = next(o for o in outcomes if isinstance(o, grpc.aio.AioRpcError))
    assert "queue is full" in refused.details()
    # Whoever was admitted got the right answer, and afterwards all is well again.
    images = {o.images.data for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)}
    assert len(images) == 1
    again = asyncio.run(flood(server.target, request, calls=1, timeout=30))
    assert again[0].images.data in images
    metrics = server.scrape()
    assert sample_value(metrics, "grpc_server_handled_total",
                        {"grpc_method": "Sample", "grpc_code": "ResourceExhausted"}) == seen[
        "RESOURCE_EXHAUSTED"]
    assert sample_value(metrics, "vae_queue_depth", {"graph": "decoder"}) == 0


def test_requests_whose_deadline_passes_in_the_queue_never_reach_onnxruntime(
    start_vae_server,
) -> None:
    server = start_vae_server(VAE_MAX_QUEUE=str(64 * 4096))
    rows_before = sample_value(server.scrape(), "vae_batch_size_sum", {"graph": "decoder"})
    request = vae_pb2.SampleRequest(count=4096)
    calls = 8
    outcomes = asyncio.run(flood(server.target, request, calls=calls, timeout=0.1))
    seen = codes(outcomes)
    assert set(seen) <= {"OK", "DEADLINE_EXCEEDED"}, seen
    assert seen["DEADLINE_EXCEEDED"] > 0
    rows_run = sample_value(server.scrape(), "vae_batch_size_sum", {"graph": "decoder"})
    # Some of the expired requests were dropped before their rows ever ran.
    assert rows_run - rows_before < calls * 4096
    assert server.health() == "SERVING"
    fine = asyncio.run(flood(server.target, vae_pb2.SampleRequest(count=1), calls=1, timeout=10))
    assert codes(fine) == {"OK": 1}
