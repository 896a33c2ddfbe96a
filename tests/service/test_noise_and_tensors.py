"""Noise that callers can reproduce, and Tensor conversion both ways."""

import numpy as np
import pytest
from vae.v1 import vae_pb2

from service.noise import NoiseSource
from service.tensors import from_proto, to_proto


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
    assert np.array_equal(from_proto(tensor), pixels)


def test_a_declared_shape_is_kept() -> None:
    floats = np.zeros((2, 784), dtype=np.float32)
    assert from_proto(to_proto(floats, (2, 28, 28))).shape == (2, 28, 28)
