"""Every RPC end to end: a real server subprocess, the real client, the bundled ONNX model."""

import grpc
import numpy as np
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.config import Config

pytestmark = pytest.mark.timeout(120)


def test_sample_returns_count_images_in_unit_range_with_the_model_version(
    client, model_manifest
) -> None:
    samples = client.sample(64, seed=7)
    assert samples.images.shape == (64, 28, 28)
    assert samples.images.dtype == np.float32
    assert samples.images.min() >= 0 and samples.images.max() <= 1
    assert samples.latents is None
    assert samples.model_version == model_manifest["version"]
    # Different prior draws decode to different digits.
    assert len({image.tobytes() for image in samples.images}) == 64


def test_sample_latents_are_the_seeded_standard_normal_scaled_by_temperature(client) -> None:
    samples = client.sample(5, seed=11, temperature=0.5, return_latents=True)
    expected = np.random.default_rng(11).standard_normal((5, 2), dtype=np.float32) * 0.5
    np.testing.assert_array_equal(samples.latents, expected)
    np.testing.assert_array_equal(samples.images, client.decode(expected))


def test_unseeded_samples_differ_between_calls(client) -> None:
    first = client.sample(4, return_latents=True)
    second = client.sample(4, return_latents=True)
    assert not np.array_equal(first.latents, second.latents)


def test_encode_gives_the_posterior_of_each_digit_for_uint8_and_float_and_both_shapes(
    client, heldout
) -> None:
    digits = heldout[:8]
    from_uint8 = client.encode(digits)
    from_float = client.encode((digits / 255).astype(np.float32).reshape(8, 28, 28))
    assert from_uint8.mean.shape == from_uint8.log_variance.shape == (8, 2)
    assert from_uint8.latents is None
    np.testing.assert_array_equal(from_uint8.mean, from_float.mean)
    np.testing.assert_array_equal(from_uint8.log_variance, from_float.log_variance)
    # A trained encoder is confident: posterior variances well below the prior's 1.
    assert np.exp(from_uint8.log_variance).max() < 1


def test_encode_with_a_seed_draws_latents_by_the_reparameterization(client, heldout) -> None:
    digits = heldout[:6]
    encoding = client.encode(digits, seed=3)
    noise = np.random.default_rng(3).standard_normal((6, 2), dtype=np.float32)
    expected = encoding.mean + np.exp(0.5 * encoding.log_variance) * noise
    np.testing.assert_array_equal(encoding.latents, expected)


def test_reconstruct_mirrors_the_input_shape_and_decodes_the_posterior_mean(
    client, heldout
) -> None:
    digits = heldout[:5]
    flat = client.reconstruct(digits)
    square = client.reconstruct(digits.reshape(5, 28, 28))
    assert flat.images.shape == (5, 784) and square.images.shape == (5, 28, 28)
    np.testing.assert_array_equal(flat.images.reshape(5, 28, 28), square.images)
    mean = client.encode(digits).mean
    np.testing.assert_array_equal(flat.images.reshape(5, 28, 28), client.decode(mean))
    assert flat.errors.shape == (5,) and (flat.errors > 0).all()


def test_reconstruction_error_matches_the_training_figure_and_flags_noise(
    client, heldout, model_manifest
) -> None:
    digits = heldout[:999]
    sampled = client.reconstruct(digits, seed=1).errors
    reported = model_manifest["training"]["heldout_reconstruction_nats"]
    # The server's per-image BCE of a posterior draw is the term training reported.
    assert sampled.mean() == pytest.approx(reported, rel=0.03)
    noise = np.random.default_rng(0).integers(0, 256, (50, 784), dtype=np.uint8)
    assert client.reconstruct(noise).errors.min() > np.percentile(sampled, 99)


def test_decode_maps_latent_points_to_images(client) -> None:
    images = client.decode(np.array([[0, 0], [1.5, -1], [-2, 2]], dtype=np.float32))
    assert images.shape == (3, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert not np.array_equal(images[0], images[1])


def test_get_model_info_describes_the_manifest_and_the_limits(client, model_manifest) -> None:
    info = client.info()
    expected = model_manifest
    assert (info.name, info.version) == (expected["name"], expected["version"])
    assert info.latent_dim == expected["latent_dim"]
    assert info.image_shape == tuple(expected["image_shape"])
    assert info.encoder_sha256 == expected["graphs"]["encoder"]["sha256"]
    assert info.decoder_sha256 == expected["graphs"]["decoder"]["sha256"]
    assert info.training_metrics["heldout_neg_elbo_nats"] == pytest.approx(
        expected["training"]["heldout_neg_elbo_nats"]
    )
    # The server runs with the default limits.
    assert (info.max_request_rows, info.max_batch_size) == (
        Config().max_request_rows, Config().max_batch_size
    )


def test_a_request_larger_than_the_max_batch_comes_back_whole_and_in_order(client, heldout) -> None:
    count = 2500  # three onnxruntime runs of at most 1024 rows
    samples = client.sample(count, seed=5, return_latents=True)
    np.testing.assert_array_equal(samples.images[::97], client.decode(samples.latents[::97]))
    digits = np.concatenate([heldout, heldout[::-1], heldout])  # 2997 rows
    big = client.encode(digits)
    for start in (0, 1023, 1024, 2047, 2048, 2996):
        one = client.encode(digits[start:start + 1])
        np.testing.assert_array_equal(big.mean[start], one.mean[0])


def test_the_largest_allowed_request_fits_the_message_limits(client) -> None:
    samples = client.sample(4096, seed=1)
    assert samples.images.shape == (4096, 28, 28)
    reconstruction = client.reconstruct(np.zeros((4096, 784), dtype=np.float32))
    assert reconstruction.images.shape == (4096, 784)


def test_the_generated_stub_sees_raw_tensor_bytes(vae_server) -> None:
    """What a client in another language sees: little-endian float32 bytes, row-major."""
    with grpc.insecure_channel(vae_server.target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        response = stub.Sample(vae_pb2.SampleRequest(count=2, seed=9), timeout=10)
    assert list(response.images.shape) == [2, 28, 28]
    assert response.images.dtype == vae_pb2.FLOAT32
    assert len(response.images.data) == 2 * 784 * 4
    pixels = np.frombuffer(response.images.data, dtype="<f4")
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_a_call_without_a_deadline_that_waits_for_the_worker_is_answered(vae_server) -> None:
    """gRPC's "no deadline" is a date 292 billion years away, too far for a timed wait."""
    with grpc.insecure_channel(
        vae_server.target, options=[("grpc.max_receive_message_length", 32 * 1024 * 1024)]
    ) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        # Larger than a batch: it goes to the batcher's worker and waits there.
        response = stub.Sample(vae_pb2.SampleRequest(count=Config().max_batch_size + 1, seed=3))
    assert list(response.images.shape) == [Config().max_batch_size + 1, 28, 28]
