"""`vae.v1.Tensor` <-> numpy: the dtype mapping, the conversions for trusted tensors, and the
one quantization of returned images to UINT8.

Tensors from callers are decoded and checked by service.validation; the service's responses are
encoded by service.wire.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from vae.v1 import vae_pb2

FLOAT32 = vae_pb2.FLOAT32
UINT8 = vae_pb2.UINT8
_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {FLOAT32: np.dtype("<f4"), UINT8: np.dtype("u1")}
_PROTO_DTYPES: dict[type, vae_pb2.DType.ValueType] = {np.float32: FLOAT32, np.uint8: UINT8}


def proto_dtype(array: np.ndarray) -> vae_pb2.DType.ValueType:
    """The Tensor dtype of a float32 or uint8 array."""
    return _PROTO_DTYPES[array.dtype.type]


def numpy_dtype(dtype: int) -> np.dtype[Any]:
    """The numpy dtype (little-endian) of a Tensor's FLOAT32 or UINT8 data."""
    return _NUMPY_DTYPES[dtype]


def to_proto(array: np.ndarray, shape: Sequence[int] | None = None) -> vae_pb2.Tensor:
    """A Tensor holding a float32 or uint8 `array` (row-major, little-endian) as `shape`
    (default: the array's own shape). The service's responses use service.wire instead."""
    dtype = proto_dtype(array)
    return vae_pb2.Tensor(
        shape=array.shape if shape is None else shape,
        dtype=dtype,
        data=array.astype(numpy_dtype(dtype), copy=False).tobytes(),
    )


def from_proto(tensor: vae_pb2.Tensor) -> np.ndarray:
    """The numpy array a (trusted) Tensor holds, e.g. one in a response; no range checks."""
    return np.frombuffer(tensor.data, dtype=_NUMPY_DTYPES[tensor.dtype]).reshape(tensor.shape)


def images_as(images: np.ndarray, dtype: int) -> np.ndarray:
    """Float32 images in [0, 1] as a response returns them in `dtype`: FLOAT32 as they are,
    UINT8 quantized as the contract defines it (vae.proto, DType):

        numpy.rint(images * numpy.float32(255)).astype(numpy.uint8)

    the float32 product rounded to the nearest integer, halves to even; a client that applies
    this to the FLOAT32 response gets the UINT8 response's bytes.
    """
    if dtype == FLOAT32:
        return images
    # The formula above, with one temporary instead of two: the decoder's rows may be a view
    # of a batch other requests share, so `images` itself is never written to.
    scaled = np.multiply(images, np.float32(255), dtype=np.float32)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)
