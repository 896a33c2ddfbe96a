"""Every request field a caller sends is checked here, before the pipeline sees it.

Each check raises InvalidArgument naming the field (`count`, `images.shape`, `latents.data`,
...), so a caller can tell what to fix; what passes comes back as plain numbers and numpy
arrays. The happy path of a tensor is one `numpy.frombuffer` and one min/max pass; the slower
diagnosis of what exactly is wrong runs only when something is.
"""

import math
from collections.abc import Sequence

import numpy as np
from vae.v1 import vae_pb2

from service.errors import InvalidArgument
from service.latent import InterpolationPath
from service.model import Model
from service.pipeline import Endpoint
from service.tensors import FLOAT32, UINT8, numpy_dtype

# Beyond this the prior's draws leave the region the decoder has seen by orders of magnitude,
# and near float32's limit they overflow into NaN images.
MAX_TEMPERATURE = 100.0
# The prior is N(0, I): a latent point beyond this many standard deviations is a caller's bug,
# and far enough out (about 1e38) the decoder's products overflow into NaN images.
MAX_ABS_LATENT = 1e4


def check_rows(field: str, rows: int, max_rows: int) -> None:
    """Reject a row count outside 1..max_rows."""
    if not 1 <= rows <= max_rows:
        raise InvalidArgument(field, f"must be between 1 and {max_rows}, got {rows}")


def temperature_of(request: vae_pb2.SampleRequest | vae_pb2.SampleStreamRequest) -> float:
    """The request's temperature, 1.0 when unset; it must be > 0 and at most MAX_TEMPERATURE."""
    if not request.HasField("temperature"):
        return 1.0
    temperature = request.temperature
    if not (math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE):
        raise InvalidArgument(
            "temperature", f"must be > 0 and at most {MAX_TEMPERATURE:g}, got {temperature:g}"
        )
    return temperature


def stream_rows(count: int, start_index: int, max_rows: int) -> None:
    """Reject a SampleStream whose dataset is outside 1..max_rows rows or which starts past
    its end."""
    check_rows("count", count, max_rows)
    if start_index >= count:
        raise InvalidArgument(
            "start_index", f"must be less than count ({count}), got {start_index}"
        )


def chunk_rows_of(chunk_rows: int, max_chunk_rows: int) -> int:
    """Rows per SampleStream chunk: 1..max_chunk_rows, and unset (0) means max_chunk_rows."""
    if chunk_rows == 0:
        return max_chunk_rows
    if chunk_rows > max_chunk_rows:
        raise InvalidArgument(
            "chunk_rows", f"must be between 1 and {max_chunk_rows} (or unset), got {chunk_rows}"
        )
    return chunk_rows


ImageRequest = (
    vae_pb2.SampleRequest | vae_pb2.ReconstructRequest | vae_pb2.DecodeRequest
    | vae_pb2.InterpolateRequest | vae_pb2.VariationsRequest | vae_pb2.SampleStreamRequest
)


def output_dtype_of(request: ImageRequest) -> vae_pb2.DType.ValueType:
    """The element type the request's images are to be returned in: FLOAT32 when unset."""
    dtype = request.output_dtype
    if dtype == vae_pb2.DTYPE_UNSPECIFIED:
        return FLOAT32
    if dtype not in (FLOAT32, UINT8):
        raise InvalidArgument(
            "output_dtype", f"must be FLOAT32, UINT8 or unset, got {_dtype_name(dtype)}"
        )
    return dtype


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


_PATHS = {
    vae_pb2.PATH_UNSPECIFIED: InterpolationPath.SPHERICAL,
    vae_pb2.PATH_LINEAR: InterpolationPath.LINEAR,
    vae_pb2.PATH_SPHERICAL: InterpolationPath.SPHERICAL,
}


def endpoint_from_proto(endpoint: vae_pb2.Endpoint, field: str, model: Model) -> Endpoint:
    """The latent point, or the one image, an Endpoint holds."""
    kind = endpoint.WhichOneof("point")
    if kind == "latent":
        name, dim = f"{field}.latent", model.latent_dim
        latent = latents_from_proto(_one_row(endpoint.latent, name, (dim,)), name, dim, 1)
        return Endpoint(latent[0], is_image=False)
    if kind == "image":
        name, (height, width) = f"{field}.image", model.image_shape
        tensor = _one_row(endpoint.image, name, (height * width,), (height, width))
        image, _ = images_from_proto(tensor, name, model.image_shape, 1)
        return Endpoint(image[0], is_image=True)
    raise InvalidArgument(field, "must hold a latent point or an image, it holds neither")


def _one_row(tensor: vae_pb2.Tensor, field: str, *shapes: tuple[int, ...]) -> vae_pb2.Tensor:
    """`tensor` as a batch of one: its shape must be one of `shapes`, with or without a
    leading 1."""
    shape = tuple(tensor.shape)
    if shape[:1] == (1,) and shape[1:] in shapes:
        return tensor
    if shape not in shapes:
        allowed = " or ".join(_shape_text(s) for s in shapes + tuple((1, *s) for s in shapes))
        raise InvalidArgument(f"{field}.shape", f"must be {allowed}, got {_shape_text(shape)}")
    return vae_pb2.Tensor(shape=(1, *shape), dtype=tensor.dtype, data=tensor.data)


def interpolation_steps(steps: int, max_steps: int) -> int:
    """Interpolate's `steps`: both endpoints and the points between, 2..max_steps."""
    if not 2 <= steps <= max_steps:
        raise InvalidArgument("steps", f"must be between 2 and {max_steps}, got {steps}")
    return steps


def interpolation_path(path: vae_pb2.Path.ValueType) -> InterpolationPath:
    """Interpolate's `path`; unset means SPHERICAL."""
    known = _PATHS.get(path)
    if known is None:
        raise InvalidArgument("path", f"must be PATH_LINEAR, PATH_SPHERICAL or unset, got {path}")
    return known


def draws_per_image(field: str, per_image: int, images: int, max_rows: int) -> int:
    """Draws per image, 1 or more, such that the images x draws rows run fit one request."""
    most = max_rows // images
    if not 1 <= per_image <= most:
        raise InvalidArgument(
            field,
            f"must be between 1 and {most} for {images} images (at most {max_rows} rows, "
            f"N x {field}, per request), got {per_image}",
        )
    return per_image


def variation_temperature(request: vae_pb2.VariationsRequest) -> float:
    """Variations' temperature, 1.0 when unset; 0 (the posterior mean) up to MAX_TEMPERATURE."""
    if not request.HasField("temperature"):
        return 1.0
    temperature = request.temperature
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise InvalidArgument(
            "temperature", f"must be >= 0 and at most {MAX_TEMPERATURE:g}, got {temperature:g}"
        )
    return temperature


def _frombuffer(
    tensor: vae_pb2.Tensor, field: str, shape: tuple[int, ...], dtypes: tuple[int, ...]
) -> np.ndarray:
    if tensor.dtype not in dtypes:
        raise InvalidArgument(
            f"{field}.dtype",
            f"must be {' or '.join(_dtype_name(d) for d in dtypes)}, "
            f"got {_dtype_name(tensor.dtype)}",
        )
    dtype = numpy_dtype(tensor.dtype)
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
