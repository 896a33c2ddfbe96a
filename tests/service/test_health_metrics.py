"""Health, reflection and /metrics, as operators and their tools see them."""

import asyncio
import subprocess
import sys

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from vae.v1 import vae_pb2, vae_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def families(metrics_text: str) -> dict[str, list]:
    """Scraped samples by metric family name."""
    return {f.name: f.samples for f in text_string_to_metric_families(metrics_text)}


def value(samples, name: str, **labels: str) -> float:
    matches = [
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_health_says_serving_for_the_server_and_the_vae_service(vae_server) -> None:
    assert vae_server.health("") == "SERVING"
    assert vae_server.health("vae.v1.VAEService") == "SERVING"
    with pytest.raises(grpc.RpcError) as raised:
        vae_server.health("no.such.Service")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_healthcheck_command_exits_0_only_when_serving(vae_server) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "service.healthcheck", "--target", vae_server.target],
        capture_output=True, text=True, timeout=30,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING")
    dead = subprocess.run(
        [sys.executable, "-m", "service.healthcheck", "--target", "127.0.0.1:1", "--timeout",
         "1"],
        capture_output=True, text=True, timeout=30,
    )
    assert dead.returncode == 1
    assert dead.stdout.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))


def test_reflection_lists_and_describes_the_services(vae_server) -> None:
    with grpc.insecure_channel(vae_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"vae.v1.VAEService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("vae.v1.VAEService")
        assert [m.name for m in service.methods] == [
            "Sample", "Encode", "Reconstruct", "Decode", "GetModelInfo", "Interpolate",
            "Variations", "Score", "SampleStream",
        ]
        sample = pool.FindMessageTypeByName("vae.v1.SampleRequest")
        assert {"count", "seed", "temperature", "return_latents"} <= set(sample.fields_by_name)


def test_metrics_are_served_over_http_with_the_grpc_dashboard_names(vae_server) -> None:
    with grpc.insecure_channel(vae_server.target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        before = families(vae_server.scrape())
        for _ in range(3):
            stub.Sample(vae_pb2.SampleRequest(count=2), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.Sample(vae_pb2.SampleRequest(count=0), timeout=10)
    after = families(vae_server.scrape())
    labels = {"grpc_type": "unary", "grpc_service": "vae.v1.VAEService", "grpc_method": "Sample"}

    def grown(family: str, name: str, **extra: str) -> float:
        old = [s for s in before.get(family, []) if s.name == name
               and all(s.labels.get(k) == v for k, v in {**labels, **extra}.items())]
        return value(after[family], name, **labels, **extra) - (old[0].value if old else 0)

    assert grown("grpc_server_started", "grpc_server_started_total") == 4
    assert grown("grpc_server_handled", "grpc_server_handled_total", grpc_code="OK") == 3
    assert grown("grpc_server_handled", "grpc_server_handled_total",
                 grpc_code="InvalidArgument") == 1
    assert grown("grpc_server_handling_seconds", "grpc_server_handling_seconds_count") == 4
    buckets = [s.labels["le"] for s in after["grpc_server_handling_seconds"]
               if s.name.endswith("_bucket") and s.labels["grpc_method"] == "Sample"]
    assert buckets[0] == "0.0001" and buckets[-2:] == ["10.0", "+Inf"]
    for graph in ("encoder", "decoder"):
        for family in ("vae_batch_size", "vae_queue_wait_seconds", "vae_inference_seconds"):
            value(after[family], f"{family}_count", graph=graph)
        assert value(after["vae_queue_depth"], "vae_queue_depth", graph=graph) == 0
    assert value(after["vae_batch_size"], "vae_batch_size_sum", graph="decoder") >= 6
    (info,) = after["vae_model_info"]
    assert info.name == "vae_model_info" and info.labels["name"] == "vae-mnist"
    assert info.labels["version"] == vae_server.records()[0]["model_version"]
    assert "vae_model_reload" in after
    assert "process_resident_memory_bytes" in after


async def many_small_samples(target: str, callers: int, calls_each: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)

        async def caller() -> None:
            for _ in range(calls_each):
                await stub.Sample(vae_pb2.SampleRequest(count=1), timeout=30)

        await asyncio.gather(*(caller() for _ in range(callers)))


def test_batches_of_more_than_one_row_form_under_32_concurrent_callers(vae_server) -> None:
    def batches() -> tuple[float, float]:
        samples = families(vae_server.scrape())["vae_batch_size"]
        return (value(samples, "vae_batch_size_count", graph="decoder"),
                value(samples, "vae_batch_size_bucket", graph="decoder", le="1.0"))

    count_before, single_before = batches()
    asyncio.run(many_small_samples(vae_server.target, callers=32, calls_each=20))
    count_after, single_after = batches()
    runs = count_after - count_before
    multi_row = runs - (single_after - single_before)
    assert multi_row > 0
    assert runs < 32 * 20  # fewer onnxruntime runs than requests

