"""service.validation: what passes comes back as numpy and numbers, what fails names its field."""

import numpy as np
import pytest
from vae.v1 import vae_pb2

from service.errors import InvalidArgument
from service.tensors import to_proto
from service.validation import (
    MAX_TEMPERATURE,
    check_rows,
    images_from_proto,
    latents_from_proto,
    output_dtype_of,
    temperature_of,
)


def test_uint8_images_become_float32_in_the_unit_range_with_their_shape_kept() -> None:
    pixels = np.arange(784 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 28, 28)
    array, shape = images_from_proto(to_proto(pixels), "images", (28, 28), 10)
    assert shape == (2, 28, 28) and array.shape == (2, 784) and array.dtype == np.float32
    np.testing.assert_array_equal(array, pixels.reshape(2, 784) / np.float32(255))


def test_float32_images_outside_the_unit_range_name_the_data() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^images\.data: FLOAT32 pixels must lie in \[0, 1\]"
    ):
        images_from_proto(to_proto(np.full((1, 784), 1.5, np.float32)), "images", (28, 28), 4)


def test_latents_are_checked_for_width_and_finiteness() -> None:
    latents = np.array([[0.5, -1]], dtype=np.float32)
    np.testing.assert_array_equal(latents_from_proto(to_proto(latents), "z", 2, 4), latents)
    with pytest.raises(InvalidArgument, match=r"^z\.data: must be finite, found 1 NaN"):
        latents_from_proto(to_proto(np.array([[0, np.nan]], np.float32)), "z", 2, 4)
    with pytest.raises(InvalidArgument, match=r"^z\.shape\[0\]: must be between 1 and 4"):
        latents_from_proto(to_proto(np.zeros((5, 2), np.float32)), "z", 2, 4)
    with pytest.raises(InvalidArgument, match=r"^z\.shape: must be \(N, 2\), got \(1, 3\)"):
        latents_from_proto(to_proto(np.zeros((1, 3), np.float32)), "z", 2, 4)


def test_an_unknown_dtype_is_named_by_its_number() -> None:
    tensor = vae_pb2.Tensor(shape=[1, 2], dtype=7, data=bytes(8))
    with pytest.raises(
        InvalidArgument, match=r"^z\.dtype: must be FLOAT32, got unknown dtype 7$"
    ):
        latents_from_proto(tensor, "z", 2, 4)


@pytest.mark.parametrize("rows", [1, 4])
def test_row_counts_within_the_limit_pass(rows: int) -> None:
    check_rows("count", rows, 4)


@pytest.mark.parametrize("rows", [0, 5])
def test_row_counts_outside_the_limit_name_the_field(rows: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"^count: must be between 1 and 4, got {rows}$"):
        check_rows("count", rows, 4)


def test_an_unset_temperature_is_one_and_a_set_one_is_kept() -> None:
    assert temperature_of(vae_pb2.SampleRequest(count=1)) == 1.0
    assert temperature_of(vae_pb2.SampleRequest(count=1, temperature=0.5)) == 0.5
    assert temperature_of(vae_pb2.SampleRequest(temperature=MAX_TEMPERATURE)) == MAX_TEMPERATURE


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), 101.0])
def test_a_temperature_outside_its_range_names_the_field(temperature: float) -> None:
    with pytest.raises(InvalidArgument, match=r"^temperature: must be > 0 and at most 100, got"):
        temperature_of(vae_pb2.SampleRequest(count=1, temperature=temperature))


@pytest.mark.parametrize(
    ("sent", "returned"),
    [(vae_pb2.DTYPE_UNSPECIFIED, vae_pb2.FLOAT32), (vae_pb2.FLOAT32, vae_pb2.FLOAT32),
     (vae_pb2.UINT8, vae_pb2.UINT8)],
)
def test_the_output_dtype_is_float32_unless_uint8_is_asked(sent: int, returned: int) -> None:
    assert output_dtype_of(vae_pb2.DecodeRequest(output_dtype=sent)) == returned


def test_an_unknown_output_dtype_names_the_field_and_the_value() -> None:
    message = r"^output_dtype: must be FLOAT32, UINT8 or unset, got unknown dtype 9$"
    with pytest.raises(InvalidArgument, match=message):
        output_dtype_of(vae_pb2.SampleRequest(count=1, output_dtype=9))
