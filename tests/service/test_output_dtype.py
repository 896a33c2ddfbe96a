"""output_dtype: every RPC that returns images returns them as FLOAT32 (the default, unchanged)
or as UINT8, exactly the FLOAT32 images quantized as the contract defines it (vae.proto, DType):

    numpy.rint(p * numpy.float32(255)).astype(numpy.uint8)
"""

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.tensors import FLOAT32, UINT8, from_proto, images_as, to_proto

pytestmark = pytest.mark.timeout(120)


def documented_quantization(images: np.ndarray) -> np.ndarray:
    """The contract's formula, written out as a client would."""
    return np.rint(images * np.float32(255)).astype(np.uint8)


def image_requests(heldout: np.ndarray) -> dict[str, Callable[[int], Message]]:
    """By method, for every RPC that returns images: its request with a given output_dtype,
    seeded or deterministic, so that two calls differ in output_dtype alone."""
    digits = heldout[:5]
    latents = np.array([[0.0, 0.0], [1.5, -1.0], [-2.0, 2.0]], np.float32)
    start = vae_pb2.Endpoint(image=to_proto(heldout[7]))
    end = vae_pb2.Endpoint(latent=to_proto(np.array([1.0, -0.5], np.float32)))
    return {
        "Sample": lambda dtype: vae_pb2.SampleRequest(
            count=300, seed=3, temperature=1.5, return_latents=True, output_dtype=dtype),
        "Reconstruct": lambda dtype: vae_pb2.ReconstructRequest(
            images=to_proto(digits.reshape(5, 28, 28)), seed=4, output_dtype=dtype),
        "Decode": lambda dtype: vae_pb2.DecodeRequest(
            latents=to_proto(latents), output_dtype=dtype),
        "Interpolate": lambda dtype: vae_pb2.InterpolateRequest(
            start=start, end=end, steps=9, output_dtype=dtype),
        "Variations": lambda dtype: vae_pb2.VariationsRequest(
            images=to_proto(digits), count=4, seed=5, output_dtype=dtype),
    }


METHODS = ("Sample", "Reconstruct", "Decode", "Interpolate", "Variations")


@pytest.fixture(scope="module")
def stub(vae_server):
    # gRPC's default receive limit, 4 MiB: what a client that changes nothing gets.
    with grpc.insecure_channel(vae_server.target) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


@pytest.mark.parametrize("method", METHODS)
def test_uint8_images_are_the_float32_images_quantized_bitwise(stub, heldout, method) -> None:
    make = image_requests(heldout)[method]
    as_float = getattr(stub, method)(make(vae_pb2.FLOAT32), timeout=30)
    as_uint8 = getattr(stub, method)(make(vae_pb2.UINT8), timeout=30)
    assert as_float.images.dtype == FLOAT32 and as_uint8.images.dtype == UINT8
    assert list(as_uint8.images.shape) == list(as_float.images.shape)
    assert len(as_uint8.images.data) * 4 == len(as_float.images.data)
    expected = documented_quantization(from_proto(as_float.images))
    assert as_uint8.images.data == expected.tobytes()
    # Everything else in the response is as it was.
    as_uint8.ClearField("images")
    as_float.ClearField("images")
    assert as_uint8.SerializeToString(deterministic=True) == as_float.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize("method", METHODS)
def test_unset_output_dtype_is_float32_and_the_response_unchanged(stub, heldout, method) -> None:
    make = image_requests(heldout)[method]
    unset = getattr(stub, method)(make(vae_pb2.DTYPE_UNSPECIFIED), timeout=30)
    as_float = getattr(stub, method)(make(vae_pb2.FLOAT32), timeout=30)
    assert unset.images.dtype == FLOAT32
    assert unset.SerializeToString() == as_float.SerializeToString()


def test_the_largest_sample_in_uint8_fits_grpcs_default_message_limit(stub) -> None:
    # In FLOAT32 the same response is 12.85 MB, beyond a default client's 4 MiB.
    response = stub.Sample(
        vae_pb2.SampleRequest(count=4096, seed=1, output_dtype=vae_pb2.UINT8), timeout=30
    )
    assert list(response.images.shape) == [4096, 28, 28]
    assert len(response.images.data) == 4096 * 784
    pixels = from_proto(response.images)
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [3, 7, 1000])
def test_an_unknown_output_dtype_is_invalid_argument_naming_it(
    stub, heldout, method, dtype
) -> None:
    request = image_requests(heldout)[method](dtype)
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        f"output_dtype: must be FLOAT32, UINT8 or unset, got unknown dtype {dtype}"
    )


def test_the_client_returns_uint8_when_asked(client, heldout) -> None:
    samples = client.sample(10, seed=8, return_latents=True)
    pixels = client.sample(10, seed=8, return_latents=True, output_dtype="uint8")
    assert pixels.images.dtype == np.uint8 and pixels.images.shape == (10, 28, 28)
    np.testing.assert_array_equal(pixels.images, documented_quantization(samples.images))
    np.testing.assert_array_equal(pixels.latents, samples.latents)
    reconstructed = client.reconstruct(heldout[:3], output_dtype=np.uint8)
    np.testing.assert_array_equal(
        reconstructed.images, documented_quantization(client.reconstruct(heldout[:3]).images)
    )
    decoded = client.decode(samples.latents, output_dtype=np.dtype("uint8"))
    np.testing.assert_array_equal(decoded, pixels.images)
    assert client.decode(samples.latents, output_dtype="float32").dtype == np.float32


@pytest.mark.parametrize("bad", ["int8", "float64", "pixels", None])
def test_the_client_refuses_other_output_dtypes_before_calling(client, bad) -> None:
    with pytest.raises(ValueError, match="output_dtype must be float32 or uint8"):
        client.sample(1, output_dtype=bad)


# --- The quantization itself (service.tensors.images_as) ---


def exact_halves() -> np.ndarray:
    """float32 pixels p whose float32 product p x 255 is exactly k + 0.5, for every k that has
    one: where rounding half to even and half up part."""
    found = []
    for k in range(255):
        guess = np.float32((k + 0.5) / 255)
        for candidate in (guess, *np.nextafter(guess, [np.float32(0), np.float32(1)])):
            if candidate * np.float32(255) == np.float32(k + 0.5):
                found.append(candidate)
    return np.array(found, np.float32)


def test_quantization_is_the_documented_formula_halves_to_even() -> None:
    halves = exact_halves()
    assert len(halves) > 100  # the test means something only with ties to break
    pixels = np.concatenate([
        halves, np.random.default_rng(0).random(10_000, dtype=np.float32),
        np.array([0, 1, np.nextafter(np.float32(1), np.float32(0))], np.float32),
    ])
    quantized = images_as(pixels, UINT8)
    assert quantized.dtype == np.uint8
    np.testing.assert_array_equal(quantized, documented_quantization(pixels))
    ties = images_as(halves, UINT8)
    assert (ties % 2 == 0).all()  # k + 0.5 goes to the even one of k and k + 1


def test_quantization_leaves_its_input_alone_and_float32_passes_through() -> None:
    # The decoder's rows may be a view of a batch that other requests' rows share.
    batch = np.random.default_rng(1).random((6, 784), dtype=np.float32)
    before = batch.copy()
    rows = batch[2:4]
    assert images_as(rows, UINT8).shape == (2, 784)
    np.testing.assert_array_equal(batch, before)
    assert images_as(rows, FLOAT32) is rows
