"""Interpolate, Variations and Score end to end: a real server subprocess, the bundled model.

Each answer is checked against what the other RPCs and the contract's documented noise give,
bit for bit where the contract promises it.
"""

import asyncio

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from vae.v1 import vae_pb2, vae_pb2_grpc

from loadtest.descriptors import resolve_by_reflection
from service.latent import InterpolationPath, elbo_and_iwae, interpolate_latents
from service.tensors import from_proto, to_proto
from tests.service.test_determinism import CALLERS, call_all, multi_row_batches

pytestmark = pytest.mark.timeout(180)

FLOAT32, UINT8 = vae_pb2.FLOAT32, vae_pb2.UINT8
LATENT_METHODS = ("Interpolate", "Variations", "Score")


@pytest.fixture(scope="module")
def stub(vae_server):
    with grpc.insecure_channel(vae_server.target) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


def latent(*values: float) -> vae_pb2.Endpoint:
    return vae_pb2.Endpoint(latent=to_proto(np.array(values, np.float32)))


def image(pixels: np.ndarray) -> vae_pb2.Endpoint:
    return vae_pb2.Endpoint(image=to_proto(pixels))


def raw(shape, dtype=FLOAT32, fill=0.5) -> vae_pb2.Tensor:
    """A Tensor of `shape` filled with `fill`, its data the size the shape asks for."""
    numpy_dtype = np.float32 if dtype == FLOAT32 else np.uint8
    data = np.full(int(np.prod(shape)), fill, numpy_dtype).tobytes()
    return vae_pb2.Tensor(shape=shape, dtype=dtype, data=data)


def posterior(stub, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    response = stub.Encode(vae_pb2.EncodeRequest(images=to_proto(digits)), timeout=10)
    return from_proto(response.mean), from_proto(response.log_variance)


def decoded(stub, latents: np.ndarray) -> np.ndarray:
    response = stub.Decode(vae_pb2.DecodeRequest(latents=to_proto(latents)), timeout=10)
    return from_proto(response.images)


def documented_noise(seed: int, images: int, per_image: int) -> np.ndarray:
    """The noise the contract documents (VariationsRequest.seed)."""
    return np.random.default_rng(seed).standard_normal((images, per_image, 2), dtype=np.float32)


# --- Interpolate ---


def test_interpolating_latent_points_decodes_each_point_and_keeps_the_endpoints_exact(
    stub, model_manifest
) -> None:
    start, end = np.array([-1.7, 0.3], np.float32), np.array([0.9, 2.2], np.float32)
    response = stub.Interpolate(vae_pb2.InterpolateRequest(
        start=latent(*start), end=latent(*end), steps=7, path=vae_pb2.PATH_LINEAR,
    ), timeout=10)
    latents, images = from_proto(response.latents), from_proto(response.images)
    assert latents.shape == (7, 2) and images.shape == (7, 28, 28)
    assert latents[0].tobytes() == start.tobytes() and latents[-1].tobytes() == end.tobytes()
    np.testing.assert_array_equal(
        latents, interpolate_latents(start, end, 7, InterpolationPath.LINEAR)
    )
    np.testing.assert_array_equal(images, decoded(stub, latents))
    assert response.model_version == model_manifest["version"]


def test_image_endpoints_are_their_posterior_means_and_the_default_path_is_spherical(
    stub, heldout
) -> None:
    first, second = heldout[3], heldout[8]
    means, _ = posterior(stub, np.stack([first, second]))
    unset = stub.Interpolate(vae_pb2.InterpolateRequest(
        start=image(first), end=image(second.reshape(28, 28)), steps=12,
    ), timeout=10)
    spherical = stub.Interpolate(vae_pb2.InterpolateRequest(
        start=image(first[None]), end=latent(*means[1]), steps=12,
        path=vae_pb2.PATH_SPHERICAL,
    ), timeout=10)
    assert unset.SerializeToString() == spherical.SerializeToString()
    np.testing.assert_array_equal(
        from_proto(unset.latents),
        interpolate_latents(means[0], means[1], 12, InterpolationPath.SPHERICAL),
    )
    norms = np.linalg.norm(from_proto(unset.latents), axis=1)
    np.testing.assert_allclose(
        norms, np.linspace(np.linalg.norm(means[0]), np.linalg.norm(means[1]), 12), rtol=1e-5
    )


def test_an_endpoint_latent_may_come_as_one_row(stub) -> None:
    one_row = vae_pb2.Endpoint(latent=to_proto(np.array([[0.5, -0.5]], np.float32)))
    flat = stub.Interpolate(vae_pb2.InterpolateRequest(
        start=latent(0.5, -0.5), end=latent(0, 0), steps=3), timeout=10)
    as_row = stub.Interpolate(vae_pb2.InterpolateRequest(
        start=one_row, end=latent(0, 0), steps=3), timeout=10)
    assert flat.SerializeToString() == as_row.SerializeToString()


# --- Variations ---


def test_seeded_variations_are_the_documented_posterior_draws_decoded(stub, heldout) -> None:
    digits = heldout[:3]
    response = stub.Variations(vae_pb2.VariationsRequest(
        images=to_proto(digits.reshape(3, 28, 28)), count=5, temperature=0.75, seed=31,
    ), timeout=10)
    latents, images = from_proto(response.latents), from_proto(response.images)
    assert latents.shape == (3, 5, 2) and images.shape == (3, 5, 28, 28)
    mean, log_variance = posterior(stub, digits)
    eps = documented_noise(31, 3, 5)
    expected = mean[:, None] + np.float32(0.75) * np.exp(0.5 * log_variance)[:, None] * eps
    np.testing.assert_array_equal(latents, expected)
    np.testing.assert_array_equal(images.reshape(15, 28, 28), decoded(stub, latents.reshape(15, 2)))


def test_variations_at_temperature_0_are_the_reconstruction_of_the_posterior_mean(
    stub, heldout
) -> None:
    digits = heldout[10:14]
    response = stub.Variations(
        vae_pb2.VariationsRequest(images=to_proto(digits), count=2, temperature=0), timeout=10
    )
    mean, _ = posterior(stub, digits)
    latents = from_proto(response.latents)
    np.testing.assert_array_equal(latents, np.repeat(mean[:, None], 2, axis=1))
    reconstructed = from_proto(stub.Reconstruct(
        vae_pb2.ReconstructRequest(images=to_proto(digits.reshape(4, 28, 28))), timeout=10
    ).images)
    np.testing.assert_array_equal(from_proto(response.images)[:, 1], reconstructed)


def test_unseeded_variations_differ_between_calls(stub, heldout) -> None:
    request = vae_pb2.VariationsRequest(images=to_proto(heldout[:2]), count=3)
    first = stub.Variations(request, timeout=10).latents.data
    assert stub.Variations(request, timeout=10).latents.data != first


# --- Score ---


def test_scores_are_the_bounds_of_the_documented_draws_and_tighten_with_more_samples(
    stub, heldout
) -> None:
    digits = heldout[:40]
    response = stub.Score(
        vae_pb2.ScoreRequest(images=to_proto(digits), samples=16, seed=8), timeout=30
    )
    assert len(response.elbo) == len(response.log_likelihood) == 40
    mean, log_variance = posterior(stub, digits)
    eps = documented_noise(8, 40, 16)
    draws = mean[:, None] + np.exp(0.5 * log_variance)[:, None] * eps
    probabilities = decoded(stub, draws.reshape(-1, 2)).reshape(40, 16, 784)
    elbo, bound = elbo_and_iwae(digits / np.float32(255), mean, log_variance, eps, probabilities)
    np.testing.assert_array_equal(response.elbo, elbo.astype(np.float32))
    np.testing.assert_array_equal(response.log_likelihood, bound.astype(np.float32))
    one = stub.Score(vae_pb2.ScoreRequest(images=to_proto(digits), samples=1, seed=8), timeout=30)
    assert np.mean(response.log_likelihood) > np.mean(one.log_likelihood)
    assert np.mean(response.log_likelihood) > np.mean(response.elbo)


def test_noise_scores_far_below_digits(stub, heldout) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (20, 784), dtype=np.uint8)
    scores = [
        stub.Score(vae_pb2.ScoreRequest(images=to_proto(x), samples=8, seed=1), timeout=30)
        for x in (heldout[:20], noise)
    ]
    assert max(scores[1].log_likelihood) < min(scores[0].log_likelihood)


# --- Limits and bad input ---


def bad_requests():
    """(id, method, request, field the message must start with)."""
    digit = raw([1, 784])
    ok_end = latent(0, 0)
    interpolate = [
        ("start missing", vae_pb2.InterpolateRequest(end=ok_end, steps=3), "start"),
        ("end holds neither form", vae_pb2.InterpolateRequest(
            start=ok_end, end=vae_pb2.Endpoint(), steps=3), "end"),
        ("latent too short", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=raw([1])), end=ok_end, steps=3), "start.latent.shape"),
        ("latent of two rows", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=raw([2, 2])), end=ok_end, steps=3),
         "start.latent.shape"),
        ("latent uint8", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=raw([2], UINT8)), end=ok_end, steps=3),
         "start.latent.dtype"),
        ("latent NaN", vae_pb2.InterpolateRequest(
            start=ok_end, end=vae_pb2.Endpoint(latent=raw([2], fill=np.nan)), steps=3),
         "end.latent.data"),
        ("latent infinite", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=raw([1, 2], fill=np.inf)), end=ok_end, steps=3),
         "start.latent.data"),
        ("latent data short", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=vae_pb2.Tensor(shape=[2], dtype=FLOAT32, data=b"1234")),
            end=ok_end, steps=3), "start.latent.data"),
        ("image of two rows", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(image=raw([2, 784])), end=ok_end, steps=3),
         "start.image.shape"),
        ("image not square", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(image=raw([28, 27])), end=ok_end, steps=3),
         "start.image.shape"),
        ("image above one", vae_pb2.InterpolateRequest(
            start=ok_end, end=vae_pb2.Endpoint(image=raw([784], fill=1.5)), steps=3),
         "end.image.data"),
        ("image NaN", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(image=raw([28, 28], fill=np.nan)), end=ok_end, steps=3),
         "start.image.data"),
        ("steps 0", vae_pb2.InterpolateRequest(start=ok_end, end=ok_end), "steps"),
        ("steps 1", vae_pb2.InterpolateRequest(start=ok_end, end=ok_end, steps=1), "steps"),
        ("steps above max", vae_pb2.InterpolateRequest(
            start=ok_end, end=ok_end, steps=4097), "steps"),
        ("unknown path", vae_pb2.InterpolateRequest(
            start=ok_end, end=ok_end, steps=3, path=7), "path"),
    ]
    variations = [
        ("images missing", vae_pb2.VariationsRequest(count=1), "images.shape"),
        ("images NaN", vae_pb2.VariationsRequest(images=raw([1, 784], fill=np.nan), count=1),
         "images.data"),
        ("count 0", vae_pb2.VariationsRequest(images=digit), "count"),
        ("count above max", vae_pb2.VariationsRequest(images=digit, count=4097), "count"),
        ("N x count above max", vae_pb2.VariationsRequest(images=raw([2, 784]), count=2049),
         "count"),
        ("temperature negative", vae_pb2.VariationsRequest(
            images=digit, count=1, temperature=-0.1), "temperature"),
        ("temperature NaN", vae_pb2.VariationsRequest(
            images=digit, count=1, temperature=float("nan")), "temperature"),
        ("temperature infinite", vae_pb2.VariationsRequest(
            images=digit, count=1, temperature=float("inf")), "temperature"),
        ("temperature above 100", vae_pb2.VariationsRequest(
            images=digit, count=1, temperature=101), "temperature"),
    ]
    score = [
        ("images wrong shape", vae_pb2.ScoreRequest(images=raw([3, 5]), samples=1),
         "images.shape"),
        ("samples 0", vae_pb2.ScoreRequest(images=digit), "samples"),
        ("N x samples above max", vae_pb2.ScoreRequest(images=raw([4, 784]), samples=1025),
         "samples"),
    ]
    return (
        [(f"Interpolate {name}", "Interpolate", r, f) for name, r, f in interpolate]
        + [(f"Variations {name}", "Variations", r, f) for name, r, f in variations]
        + [(f"Score {name}", "Score", r, f) for name, r, f in score]
    )


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [pytest.param(m, r, f, id=i) for i, m, r, f in bad_requests()],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub, method, request_message, field
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request_message, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: "), raised.value.details()


def test_the_messages_say_what_was_expected(stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Variations(vae_pb2.VariationsRequest(images=raw([3, 784]), count=2000), timeout=10)
    assert raised.value.details() == (
        "count: must be between 1 and 1365 for 3 images (at most 4096 rows, N x count, "
        "per request), got 2000"
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Interpolate(vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=raw([3])), end=latent(0, 0), steps=2), timeout=10)
    assert raised.value.details() == "start.latent.shape: must be (2) or (1, 2), got (3)"


def decoder_rows_run(server) -> float:
    """Rows the decoder's onnxruntime session has run so far."""
    return server.metric("vae_batch_size_sum", graph="decoder")


def test_the_rows_run_count_against_the_request_row_limit(start_vae_server, heldout) -> None:
    server = start_vae_server(VAE_MAX_REQUEST_ROWS="8")
    with grpc.insecure_channel(server.target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        info = stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
        assert (info.max_request_rows, info.max_interpolation_steps) == (8, 8)
        before = decoder_rows_run(server)
        stub.Variations(vae_pb2.VariationsRequest(images=to_proto(heldout[:2]), count=4),
                        timeout=10)
        assert decoder_rows_run(server) - before == 8
        stub.Score(vae_pb2.ScoreRequest(images=to_proto(heldout[:4]), samples=2), timeout=10)
        stub.Interpolate(vae_pb2.InterpolateRequest(
            start=latent(0, 0), end=latent(1, 1), steps=8), timeout=10)
        assert decoder_rows_run(server) - before == 24
        for method, request, field in [
            ("Variations", vae_pb2.VariationsRequest(images=to_proto(heldout[:3]), count=3),
             "count"),
            ("Score", vae_pb2.ScoreRequest(images=to_proto(heldout[:4]), samples=3), "samples"),
            ("Interpolate", vae_pb2.InterpolateRequest(
                start=latent(0, 0), end=latent(1, 1), steps=9), "steps"),
        ]:
            with pytest.raises(grpc.RpcError) as raised:
                getattr(stub, method)(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert raised.value.details().startswith(f"{field}: ")
        assert decoder_rows_run(server) - before == 24


def test_get_model_info_reports_the_interpolation_limit(stub) -> None:
    info = stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=10)
    assert info.max_interpolation_steps == info.max_request_rows == 4096


# --- Under load, deadlines, reflection, metrics ---


def seeded_latent_requests(heldout: np.ndarray) -> list[tuple[str, object]]:
    """Seeded Variations and Score requests of different sizes, and Interpolate ones."""
    requests: list[tuple[str, object]] = []
    for i in range(CALLERS):
        images = to_proto(heldout[i:i + 1 + i % 6])
        requests += [
            ("Variations", vae_pb2.VariationsRequest(
                images=images, count=1 + i % 5, temperature=i / 8, seed=3000 + i)),
            ("Score", vae_pb2.ScoreRequest(images=images, samples=1 + i % 7, seed=4000 + i)),
            ("Interpolate", vae_pb2.InterpolateRequest(
                start=image(heldout[i]), end=latent(i / 8, -1), steps=2 + i % 9,
                path=vae_pb2.PATH_LINEAR if i % 2 else vae_pb2.PATH_SPHERICAL)),
        ]
    return requests


def test_seeded_results_are_identical_alone_and_under_32_concurrent_callers(
    vae_server, heldout
) -> None:
    requests = seeded_latent_requests(heldout)
    (alone,) = asyncio.run(call_all(vae_server.target, requests, concurrency=1, rounds=1))
    batched_before = multi_row_batches(vae_server.scrape())
    crowded = asyncio.run(call_all(vae_server.target, requests, concurrency=CALLERS, rounds=3))
    # The comparison means something only if requests really shared onnxruntime runs.
    assert multi_row_batches(vae_server.scrape()) - batched_before > 0
    for round_ in crowded:
        for (method, _), expected, got in zip(requests, alone, round_, strict=True):
            assert got == expected, f"{method} differs under load"


# No request in the mix below runs more rows than this through either graph.
MOST_ROWS_PER_REQUEST = 4


def small_requests_among_other_rpcs(heldout: np.ndarray) -> list[tuple[str, object]]:
    """Seeded Variations and Score requests of one digit each, and Sample, Decode and
    Interpolate (latent endpoints) requests: every one runs at most MOST_ROWS_PER_REQUEST rows
    through a graph, and only Variations and Score run the encoder (one row each)."""
    requests: list[tuple[str, object]] = []
    for i in range(CALLERS):
        rows = 1 + i % MOST_ROWS_PER_REQUEST
        digit = to_proto(heldout[i:i + 1])
        latents = np.linspace(-2, 2, 2 * rows, dtype=np.float32).reshape(rows, 2) * (i / 16)
        requests += [
            ("Variations", vae_pb2.VariationsRequest(
                images=digit, count=rows, temperature=i / 8, seed=5000 + i)),
            ("Sample", vae_pb2.SampleRequest(count=rows, seed=7000 + i, return_latents=True)),
            ("Score", vae_pb2.ScoreRequest(images=digit, samples=rows, seed=6000 + i)),
            ("Decode", vae_pb2.DecodeRequest(latents=to_proto(latents))),
            ("Interpolate", vae_pb2.InterpolateRequest(
                start=latent(i / 8, 1), end=latent(-1, i / 16), steps=max(rows, 2))),
        ]
    return requests


def batches_above(metrics_text: str, graph: str, rows: int) -> float:
    """How many onnxruntime runs of `graph` so far had more than `rows` rows (a bucket bound)."""
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if family.name == "vae_batch_size" and sample.labels["graph"] == graph
    }
    return samples[("vae_batch_size_count", None)] - samples[("vae_batch_size_bucket", f"{rows}.0")]


def test_seeded_variations_and_scores_are_identical_when_their_rows_join_other_requests(
    vae_server, heldout
) -> None:
    requests = small_requests_among_other_rpcs(heldout)
    (alone,) = asyncio.run(call_all(vae_server.target, requests, concurrency=1, rounds=1))
    before = vae_server.scrape()
    crowded = asyncio.run(call_all(vae_server.target, requests, concurrency=CALLERS, rounds=3))
    after = vae_server.scrape()
    # A run larger than any one request's rows holds several requests' rows. Only Variations
    # and Score encode, one row each: an encoder run of two rows or more joined them together.
    assert batches_above(after, "encoder", 1) > batches_above(before, "encoder", 1)
    assert batches_above(after, "decoder", MOST_ROWS_PER_REQUEST) > batches_above(
        before, "decoder", MOST_ROWS_PER_REQUEST
    )
    for round_ in crowded:
        for (method, _), expected, got in zip(requests, alone, round_, strict=True):
            assert got == expected, f"{method} differs among other requests"


async def flood(target: str, request, calls: int, timeout: float) -> list:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        return await asyncio.gather(
            *(stub.Score(request, timeout=timeout) for _ in range(calls)), return_exceptions=True
        )


def test_the_methods_are_described_by_reflection_as_ghz_asks(vae_server) -> None:
    with grpc.insecure_channel(vae_server.target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("vae.v1.VAEService")
        assert set(LATENT_METHODS) <= {method.name for method in service.methods}

    async def resolve_all() -> None:
        async with grpc.aio.insecure_channel(vae_server.target) as channel:
            for method in LATENT_METHODS:
                resolved = await resolve_by_reflection(channel, f"vae.v1.VAEService.{method}")
                assert resolved.descriptor.input_type.full_name == f"vae.v1.{method}Request"
                assert resolved.descriptor.output_type.full_name == f"vae.v1.{method}Response"

    asyncio.run(resolve_all())


def test_the_methods_are_counted_in_the_grpc_metrics(vae_server, stub, heldout) -> None:
    stub.Interpolate(vae_pb2.InterpolateRequest(start=latent(0, 1), end=latent(1, 0), steps=2),
                     timeout=10)
    stub.Variations(vae_pb2.VariationsRequest(images=to_proto(heldout[:1]), count=1), timeout=10)
    stub.Score(vae_pb2.ScoreRequest(images=to_proto(heldout[:1]), samples=1), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Score(vae_pb2.ScoreRequest(images=to_proto(heldout[:1])), timeout=10)
    handled = {
        (s.labels["grpc_method"], s.labels["grpc_code"]): s.value
        for family in text_string_to_metric_families(vae_server.scrape())
        for s in family.samples if s.name == "grpc_server_handled_total"
    }
    for method in LATENT_METHODS:
        assert handled[(method, "OK")] >= 1
    assert handled[("Score", "InvalidArgument")] >= 1
