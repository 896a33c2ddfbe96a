"""The response serializer of VAEService: tensors' data copied once, straight from numpy.

Servicer methods return a `Response`: the response message with its Tensor fields unset, and
those tensors as numpy arrays beside it. `serialize`, registered as every method's response
serializer, turns it into the bytes gRPC sends.

Through protobuf, a tensor's data is copied four times before gRPC sees it: numpy to `bytes`,
into the message, into the encoder's buffer, and into the returned `bytes`; for large responses
those copies cost several times what the one copy here does (`make bench` measures both). Here
each Tensor field is encoded from its array, and the one copy is the join that builds the
response's bytes.

Every response's Tensor fields are numbered before its other fields (the rule vae.proto
states), so encoding the tensors here and appending the rest as protobuf serializes it gives
exactly protobuf's own deterministic serialization of the whole response
(tests/service/test_wire.py checks this for every response type): any protobuf library in any
language reads it as the same message.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
from google.protobuf.message import Message
from vae.v1 import vae_pb2

from service.tensors import numpy_dtype, proto_dtype

# Wire types (protobuf's encoding documentation): varint and length-delimited.
_VARINT, _LENGTH_DELIMITED = 0, 2
_TENSOR_FIELDS = vae_pb2.Tensor.DESCRIPTOR.fields_by_name
_SHAPE_TAG = (_TENSOR_FIELDS["shape"].number << 3) | _LENGTH_DELIMITED
_DTYPE_TAG = (_TENSOR_FIELDS["dtype"].number << 3) | _VARINT
_DATA_TAG = (_TENSOR_FIELDS["data"].number << 3) | _LENGTH_DELIMITED

ResponseMessage = TypeVar("ResponseMessage", bound=Message)


class TensorField(NamedTuple):
    """A Tensor field of a response: its name, a float32 or uint8 array, and the shape to
    declare (None: the array's own)."""

    name: str
    array: np.ndarray
    shape: Sequence[int] | None = None


@dataclass(frozen=True)
class Response(Generic[ResponseMessage]):
    """A response message and the Tensor fields it carries, still numpy arrays.

    `message` leaves those fields unset; `tensors` come in field-number order.
    """

    message: ResponseMessage
    tensors: Sequence[TensorField] = ()


def serialize(response: Response[Any]) -> bytes:
    """The response's bytes: its message with its tensors set, as protobuf would serialize it."""
    fields = response.message.DESCRIPTOR.fields_by_name
    parts: list[bytes | memoryview] = []
    for name, array, shape in response.tensors:
        parts += _tensor_field(
            fields[name].number, array, array.shape if shape is None else shape
        )
    parts.append(response.message.SerializeToString(deterministic=True))
    return b"".join(parts)


def _tensor_field(
    field_number: int, array: np.ndarray, shape: Sequence[int]
) -> list[bytes | memoryview]:
    """A Tensor field's encoding, its data still the array's own memory."""
    dtype = proto_dtype(array)
    data = np.ascontiguousarray(array, dtype=numpy_dtype(dtype)).data.cast("B")
    return [_tensor_head(field_number, tuple(shape), dtype, data.nbytes), data]


@functools.lru_cache(maxsize=1024)
def _tensor_head(field_number: int, shape: tuple[int, ...], dtype: int, nbytes: int) -> bytes:
    """Everything of a Tensor field's encoding before its data; a response's shapes repeat
    (one per request size), so each is encoded once."""
    dims = b"".join(_varint(size) for size in shape)
    head = b""
    # proto3 leaves out empty and zero fields; so does protobuf's own serializer.
    if dims:
        head += _varint(_SHAPE_TAG) + _varint(len(dims)) + dims
    if dtype:
        head += _varint(_DTYPE_TAG) + _varint(dtype)
    if nbytes:
        head += _varint(_DATA_TAG) + _varint(nbytes)
    field_head = _varint((field_number << 3) | _LENGTH_DELIMITED)
    return field_head + _varint(len(head) + nbytes) + head


def _varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int: seven bits per byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
