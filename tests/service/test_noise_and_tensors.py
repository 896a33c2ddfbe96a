"""Noise that callers can reproduce, and Tensor conversion both ways."""

import numpy as np
import pytest
from vae.v1 import vae_pb2

from service.errors import InvalidArgument
from service.noise import NoiseSource
from service.tensors import from_proto, images_from_proto, latents_from_proto, to_proto


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32, 2**63 + 5, 2**64 - 1])
@pytest.mark.parametrize("shape", [(1, 2), (64, 2), (5, 3)])
def test_seeded_noise_is_numpys_default_rng_exactly(seed, shape) -> None:
    source = NoiseSource()
    expected = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    np.testing.assert_array_equal(source.normal(*shape, seed=seed), expected)
    source.normal(3, 2)  # unseeded draws in between change nothing
    np.testing.assert_array_equal(source.normal(*shape, seed=seed), expected)


def test_unseeded_noise_is_fresh_each_time() -> None:
    source = NoiseSource()
    assert not np.array_equal(source.normal(4, 2), source.normal(4, 2))


def test_tensors_round_trip_float32_and_uint8() -> None:
    floats = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    assert np.array_equal(from_proto(to_proto(floats)), floats)
    pixels = np.arange(784 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 784)
    tensor = to_proto(pixels)
    assert tensor.dtype == vae_pb2.UINT8 and bytes(tensor.data) == pixels.tobytes()
    array, shape = images_from_proto(tensor, "images", (28, 28), 10)
    assert shape == (2, 784) and array.dtype == np.float32
    np.testing.assert_array_equal(array, pixels / np.float32(255))


def test_latents_are_checked_for_width_and_finiteness() -> None:
    latents = np.array([[0.5, -1]], dtype=np.float32)
    np.testing.assert_array_equal(latents_from_proto(to_proto(latents), "z", 2, 4), latents)
    with pytest.raises(InvalidArgument, match=r"^z\.data: must be finite, found 1 NaN"):
        latents_from_proto(to_proto(np.array([[0, np.nan]], np.float32)), "z", 2, 4)
    with pytest.raises(InvalidArgument, match=r"^z\.shape\[0\]: must be between 1 and 4"):
        latents_from_proto(to_proto(np.zeros((5, 2), np.float32)), "z", 2, 4)
