"""numpy arrays <-> `vae.v1.Tensor`: raw little-endian, row-major bytes, as the contract says.

The server checks every tensor it receives; the client trusts the server's responses.
"""

import contextlib
from typing import Any, TypeAlias

import numpy as np
from vae.v1 import vae_pb2

_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    vae_pb2.FLOAT32: np.dtype("<f4"),
    vae_pb2.UINT8: np.dtype("u1"),
}

# What a call that returns images may ask them in: a name or a numpy dtype, float32 or uint8.
OutputDType: TypeAlias = str | type[np.generic] | np.dtype[Any]


def proto_dtype(output_dtype: OutputDType) -> vae_pb2.DType.ValueType:
    """The Tensor dtype of "float32" or "uint8" (or their numpy dtypes); ValueError otherwise."""
    with contextlib.suppress(TypeError):  # not a dtype at all
        dtype = np.dtype(output_dtype)
        for proto, numpy_dtype in _NUMPY_DTYPES.items():
            if dtype == numpy_dtype:
                return vae_pb2.DType.ValueType(proto)
    raise ValueError(f"output_dtype must be float32 or uint8, got {output_dtype!r}")


def to_tensor(array: np.ndarray) -> vae_pb2.Tensor:
    """A Tensor of `array`: uint8 as it is (a quarter of the bytes), anything else as float32."""
    dtype = vae_pb2.UINT8 if array.dtype == np.uint8 else vae_pb2.FLOAT32
    return vae_pb2.Tensor(
        shape=array.shape,
        dtype=dtype,
        data=array.astype(_NUMPY_DTYPES[dtype], copy=False).tobytes(),
    )


def from_tensor(tensor: vae_pb2.Tensor) -> np.ndarray:
    """The (read-only) numpy array a Tensor holds."""
    return np.frombuffer(tensor.data, dtype=_NUMPY_DTYPES[tensor.dtype]).reshape(tensor.shape)
