"""Seeded results are bitwise identical whatever else the server is doing.

Two halves: onnxruntime, with the session options the server uses, computes each row the same
whatever batch it is in; and end to end, seeded requests give the same bytes alone and mixed
into multi-row batches by 32 concurrent callers.
"""

import asyncio

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.config import available_cpus
from service.model import load_model, newest_version_dir
from service.tensors import to_proto

pytestmark = pytest.mark.timeout(180)
CALLERS = 32


@pytest.mark.parametrize("threads", sorted({1, available_cpus()}))
def test_each_row_of_a_batched_run_equals_the_row_run_alone(
    threads, heldout, model_dir
) -> None:
    model = load_model(newest_version_dir(model_dir), threads)
    rows = 1100  # more than the default max_batch_size of 1024
    latents = np.random.default_rng(0).standard_normal((rows, 2), dtype=np.float32) * 2
    images = (np.concatenate([heldout, heldout])[:rows] / 255).astype(np.float32)
    for graph, inputs in ((model.decoder, latents), (model.encoder, images)):
        batched = graph.run(inputs)
        for size in (1, 2, 3, 5, 8, 17, 64, 255, 256, 1023, 1024):
            for start in (0, 1, 7, rows - size):
                alone = graph.run(inputs[start:start + size])
                for whole, part in zip(batched, alone, strict=True):
                    assert np.array_equal(whole[start:start + size], part), (
                        f"{graph.name}: rows {start}..{start + size} differ from the "
                        f"{rows}-row run"
                    )


def seeded_requests(heldout: np.ndarray) -> list[tuple[str, object]]:
    """A mix of seeded requests of different sizes for every RPC with randomness."""
    requests: list[tuple[str, object]] = []
    for i in range(CALLERS):
        count = 1 + (i * 7) % 40
        images = to_proto(heldout[i:i + count])
        requests += [
            ("Sample", vae_pb2.SampleRequest(count=count, seed=i, temperature=0.5 + i / 16)),
            ("Encode", vae_pb2.EncodeRequest(images=images, seed=1000 + i)),
            ("Reconstruct", vae_pb2.ReconstructRequest(images=images, seed=2000 + i)),
        ]
    return requests


async def call_all(target: str, requests, concurrency: int, rounds: int) -> list[list[bytes]]:
    """Send `requests` `rounds` times with `concurrency` callers; serialized responses."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        work = asyncio.Queue()
        for round_ in range(rounds):
            for index, request in enumerate(requests):
                work.put_nowait((round_, index, request))
        results: list[list[bytes]] = [[b""] * len(requests) for _ in range(rounds)]

        async def caller() -> None:
            while not work.empty():
                round_, index, (method, request) = work.get_nowait()
                response = await getattr(stub, method)(request, timeout=60)
                results[round_][index] = response.SerializeToString(deterministic=True)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return results


def multi_row_batches(metrics_text: str) -> float:
    """How many onnxruntime runs so far had more than one row, over both graphs."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "vae_batch_size":
            continue
        for sample in family.samples:
            if sample.name == "vae_batch_size_count":
                total += sample.value
            elif sample.name == "vae_batch_size_bucket" and sample.labels["le"] == "1.0":
                total -= sample.value
    return total


def test_seeded_results_are_identical_alone_and_under_32_concurrent_callers(
    vae_server, heldout
) -> None:
    requests = seeded_requests(heldout)
    (alone,) = asyncio.run(call_all(vae_server.target, requests, concurrency=1, rounds=1))
    batched_before = multi_row_batches(vae_server.scrape())
    crowded = asyncio.run(call_all(vae_server.target, requests, concurrency=CALLERS, rounds=3))
    batched_during = multi_row_batches(vae_server.scrape()) - batched_before
    # The comparison means something only if requests really shared onnxruntime runs.
    assert batched_during > 0
    for round_ in crowded:
        for (method, _), expected, got in zip(requests, alone, round_, strict=True):
            assert got == expected, f"{method} differs under load"
