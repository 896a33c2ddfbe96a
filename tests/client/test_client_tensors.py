"""The client's own tensor conversion speaks the same bytes as the server's."""

import numpy as np
from vae.v1 import vae_pb2

from service.tensors import from_proto, to_proto
from vae_client._tensors import from_tensor, to_tensor


def test_uint8_travels_as_it_is_and_float_arrays_as_float32() -> None:
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert to_tensor(pixels) == to_proto(pixels)
    assert to_tensor(pixels).dtype == vae_pb2.UINT8
    floats = np.linspace(0, 1, 3 * 784).reshape(3, 784)  # float64
    assert to_tensor(floats) == to_proto(floats.astype(np.float32))


def test_a_tensor_comes_back_as_the_array_it_holds() -> None:
    latents = np.array([[0.5, -1.25], [3.0, 1e-3]], dtype=np.float32)
    back = from_tensor(to_proto(latents))
    assert back.dtype == np.float32 and back.shape == (2, 2)
    np.testing.assert_array_equal(back, latents)
    np.testing.assert_array_equal(from_proto(to_tensor(latents)), latents)
