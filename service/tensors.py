"""`vae.v1.Tensor` <-> numpy, with the checks every tensor from a caller must pass.

Each check raises InvalidArgument naming the field (`images.shape`, `latents.data`, ...), so a
caller can tell what to fix. The happy path is one `numpy.frombuffer` and one min/max pass; the
slower diagnosis of what exactly is wrong runs only when something is.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from vae.v1 import vae_pb2

from service.errors import InvalidArgument

FLOAT32 = vae_pb2.FLOAT32
UINT8 = vae_pb2.UINT8
_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {FLOAT32: np.dtype("<f4"), UINT8: np.dtype("u1")}
_PROTO_DTYPES: dict[type, vae_pb2.DType.ValueType] = {np.float32: FLOAT32, np.uint8: UINT8}


def check_rows(field: str, rows: int, max_rows: int) -> None:
    """Reject a row count outside 1..max_rows."""
    if not 1 <= rows <= max_rows:
        raise InvalidArgument(field, f"must be between 1 and {max_rows}, got {rows}")


def images_from_proto(
    tensor: vae_pb2.Tensor, field: str, image_shape: tuple[int, int], max_rows: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """A (N, H*W) float32 array in [0, 1] from an (N, H*W) or (N, H, W) FLOAT32/UINT8 tensor.

    Returns the array and the tensor's own shape, so a response can mirror it.
    """
    height, width = image_shape
    shape = tuple(tensor.shape)
    if not (shape[1:] == (height * width,) or shape[1:] == (height, width)):
        raise InvalidArgument(
            f"{field}.shape",
            f"must be (N, {height * width}) or (N, {height}, {width}), got {_shape_text(shape)}",
        )
    check_rows(f"{field}.shape[0]", shape[0], max_rows)
    array = _frombuffer(tensor, field, shape, (FLOAT32, UINT8))
    array = array.reshape(shape[0], height * width)
    if tensor.dtype == UINT8:
        return np.divide(array, 255, dtype=np.float32), shape
    low, high = array.min(), array.max()
    if not (low >= 0.0 and high <= 1.0):
        _check_finite(array, field)
        raise InvalidArgument(
            f"{field}.data", f"FLOAT32 pixels must lie in [0, 1], got min {low:g}, max {high:g}"
        )
    return array, shape


# The prior is N(0, I): a latent point beyond this many standard deviations is a caller's bug,
# and far enough out (about 1e38) the decoder's products overflow into NaN images.
MAX_ABS_LATENT = 1e4


def latents_from_proto(
    tensor: vae_pb2.Tensor, field: str, latent_dim: int, max_rows: int
) -> np.ndarray:
    """A (N, latent_dim) float32 array of finite values within ±MAX_ABS_LATENT."""
    shape = tuple(tensor.shape)
    if len(shape) != 2 or shape[1] != latent_dim:
        raise InvalidArgument(
            f"{field}.shape", f"must be (N, {latent_dim}), got {_shape_text(shape)}"
        )
    check_rows(f"{field}.shape[0]", shape[0], max_rows)
    array = _frombuffer(tensor, field, shape, (FLOAT32,))
    low, high = array.min(), array.max()
    # NaN propagates through min and max, and an infinity becomes one of them.
    if not np.isfinite(low + high):
        _check_finite(array, field)
    if low < -MAX_ABS_LATENT or high > MAX_ABS_LATENT:
        raise InvalidArgument(
            f"{field}.data", f"values must lie within ±{MAX_ABS_LATENT:g} (the prior is N(0, I))"
        )
    return array


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


def _frombuffer(
    tensor: vae_pb2.Tensor, field: str, shape: tuple[int, ...], dtypes: tuple[int, ...]
) -> np.ndarray:
    if tensor.dtype not in dtypes:
        raise InvalidArgument(
            f"{field}.dtype",
            f"must be {' or '.join(_dtype_name(d) for d in dtypes)}, "
            f"got {_dtype_name(tensor.dtype)}",
        )
    dtype = _NUMPY_DTYPES[tensor.dtype]
    data = tensor.data
    expected = dtype.itemsize
    for size in shape:
        expected *= size
    if len(data) != expected:
        raise InvalidArgument(
            f"{field}.data",
            f"has {len(data)} bytes, but shape {_shape_text(shape)} of "
            f"{_dtype_name(tensor.dtype)} needs {expected}",
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _check_finite(array: np.ndarray, field: str) -> None:
    bad = np.count_nonzero(~np.isfinite(array))
    if bad:
        raise InvalidArgument(
            f"{field}.data", f"must be finite, found {bad} NaN or infinite values"
        )


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _dtype_name(dtype: int) -> str:
    try:
        return vae_pb2.DType.Name(vae_pb2.DType.ValueType(dtype))
    except ValueError:
        return f"unknown dtype {dtype}"
