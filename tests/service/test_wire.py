"""service.wire: responses serialized by hand must be byte for byte protobuf's own."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vae.v1 import vae_pb2

from service.tensors import to_proto
from service.wire import Response, TensorField, serialize

RESPONSE_TYPES = [
    getattr(vae_pb2, method.output_type.name)
    for method in vae_pb2.DESCRIPTOR.services_by_name["VAEService"].methods
]


def tensor_fields(message_type: type) -> list[str]:
    return [
        field.name for field in message_type.DESCRIPTOR.fields
        if field.message_type is vae_pb2.Tensor.DESCRIPTOR
    ]


def test_the_tensor_message_has_only_the_fields_the_encoder_writes() -> None:
    # A field added to Tensor would be silently dropped from every response.
    assert [f.name for f in vae_pb2.Tensor.DESCRIPTOR.fields] == ["shape", "dtype", "data"]


@pytest.mark.parametrize("message_type", RESPONSE_TYPES, ids=lambda t: t.__name__)
def test_every_responses_tensor_fields_are_numbered_before_its_other_fields(
    message_type: type,
) -> None:
    # What makes the hand-encoded tensors plus protobuf's rest equal protobuf's whole.
    fields = sorted(message_type.DESCRIPTOR.fields, key=lambda f: f.number)
    kinds = [f.message_type is vae_pb2.Tensor.DESCRIPTOR for f in fields]
    assert kinds == sorted(kinds, reverse=True)
    assert not any(f.is_repeated for f, tensor in zip(fields, kinds, strict=True) if tensor)


arrays = st.builds(
    lambda rows, width, dtype, seed: (
        np.random.default_rng(seed).random((rows, width)).astype(dtype)
        if dtype == np.float32
        else np.random.default_rng(seed).integers(0, 256, (rows, width), dtype=np.uint8)
    ),
    st.integers(1, 40), st.integers(1, 30), st.sampled_from([np.float32, np.uint8]),
    st.integers(0, 2**32),
)


@settings(max_examples=60, deadline=None)
@given(
    message_index=st.integers(0, len(RESPONSE_TYPES) - 1),
    arrays=st.lists(arrays, min_size=3, max_size=3),
    set_tensor=st.lists(st.booleans(), min_size=3, max_size=3),
    version=st.text(max_size=12),
    errors=st.lists(st.floats(width=32, allow_nan=False), max_size=5),
)
def test_hand_encoded_responses_equal_protobufs_deterministic_serialization(
    message_index: int,
    arrays: list[np.ndarray],
    set_tensor: list[bool],
    version: str,
    errors: list[float],
) -> None:
    message_type = RESPONSE_TYPES[message_index]
    names = tensor_fields(message_type)
    rest = message_type()
    if "model_version" in message_type.DESCRIPTOR.fields_by_name:
        rest.model_version = version
    if "reconstruction_error" in message_type.DESCRIPTOR.fields_by_name:
        rest.reconstruction_error.extend(errors)
    whole = message_type()
    whole.CopyFrom(rest)
    tensors = []
    for name, array, wanted in zip(names, arrays, set_tensor, strict=False):
        if wanted:
            tensors.append(TensorField(name, array))
            getattr(whole, name).CopyFrom(to_proto(array))
    assert serialize(Response(rest, tensors)) == whole.SerializeToString(deterministic=True)


def test_a_declared_shape_and_a_non_contiguous_array_are_encoded_as_given() -> None:
    images = np.random.default_rng(0).random((28 * 3, 28), dtype=np.float32).T  # strided
    declared = (3, 28, 28)
    encoded = serialize(Response(
        vae_pb2.DecodeResponse(model_version="7"), [TensorField("images", images, declared)]
    ))
    decoded = vae_pb2.DecodeResponse.FromString(encoded)
    assert tuple(decoded.images.shape) == declared
    assert decoded.images.dtype == vae_pb2.FLOAT32
    assert decoded.model_version == "7"
    got = np.frombuffer(decoded.images.data, dtype="<f4")
    np.testing.assert_array_equal(got, np.ascontiguousarray(images).ravel())


def test_uint8_images_with_a_declared_shape_are_protobufs_own_bytes() -> None:
    # What a response asked in UINT8 (output_dtype) carries: (N, 784) pixels declared (N, 28, 28).
    pixels = np.random.default_rng(2).integers(0, 256, (5, 784), dtype=np.uint8)
    latents = np.random.default_rng(3).standard_normal((5, 2), dtype=np.float32)
    encoded = serialize(Response(
        vae_pb2.SampleResponse(model_version="1"),
        [TensorField("images", pixels, (5, 28, 28)), TensorField("latents", latents)],
    ))
    whole = vae_pb2.SampleResponse(
        images=to_proto(pixels, (5, 28, 28)), latents=to_proto(latents), model_version="1"
    )
    assert encoded == whole.SerializeToString(deterministic=True)
    decoded = vae_pb2.SampleResponse.FromString(encoded)
    assert decoded.images.dtype == vae_pb2.UINT8 and len(decoded.images.data) == 5 * 784


def test_large_tensors_whose_lengths_need_multi_byte_varints_round_trip() -> None:
    images = np.random.default_rng(1).random((1024, 784), dtype=np.float32)
    encoded = serialize(Response(
        vae_pb2.SampleResponse(model_version="1"), [TensorField("images", images, (1024, 28, 28))]
    ))
    expected = vae_pb2.SampleResponse(images=to_proto(images, (1024, 28, 28)), model_version="1")
    assert encoded == expected.SerializeToString(deterministic=True)
