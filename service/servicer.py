"""The gRPC face of the pipeline: protos in, numpy through VAEPipeline, serialized protos out.

Each method returns its response already serialized: the tensors go straight from numpy into
the bytes gRPC sends (service.wire), so the server registers the methods without a response
serializer. No try/except here: exceptions travel to service.instrumentation, which maps them
to status codes in one place.
"""

import math
import time

import grpc
import numpy as np
from vae.v1 import vae_pb2

from service.errors import InvalidArgument
from service.latent import InterpolationPath
from service.model import Model
from service.pipeline import MAX_TEMPERATURE, Endpoint, VAEPipeline
from service.tensors import images_from_proto, latents_from_proto
from service.wire import TensorField, serialize


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline as a `time.monotonic()` instant, None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _seed(
    request: vae_pb2.SampleRequest | vae_pb2.EncodeRequest | vae_pb2.ReconstructRequest
    | vae_pb2.VariationsRequest | vae_pb2.ScoreRequest,
) -> int | None:
    return request.seed if request.HasField("seed") else None


class VAEServicer:
    """Implements vae.v1.VAEService on a VAEPipeline; each method returns the serialized
    response message (the generated servicer base class would promise message objects)."""

    def __init__(self, pipeline: VAEPipeline) -> None:
        self._pipeline = pipeline

    def _images(self, tensor: vae_pb2.Tensor, model: Model) -> tuple[np.ndarray, tuple[int, ...]]:
        return images_from_proto(
            tensor, "images", model.image_shape, self._pipeline.max_request_rows
        )

    def Sample(
        self, request: vae_pb2.SampleRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Draw `count` digits from the prior."""
        model = self._pipeline.model
        images, latents = self._pipeline.sample(
            model,
            request.count,
            _seed(request),
            request.temperature if request.HasField("temperature") else 1.0,
            _deadline(context),
            context.is_active,
        )
        tensors: list[TensorField] = [("images", images, (request.count, *model.image_shape))]
        if request.return_latents:
            tensors.append(("latents", latents, None))
        return serialize(vae_pb2.SampleResponse(model_version=model.version), tensors)

    def Encode(
        self, request: vae_pb2.EncodeRequest, context: grpc.ServicerContext
    ) -> bytes:
        """The posterior of each image, and a seeded draw from it when asked."""
        model = self._pipeline.model
        images, _ = self._images(request.images, model)
        encoding = self._pipeline.encode(
            model, images, _seed(request), _deadline(context), context.is_active
        )
        tensors: list[TensorField] = [
            ("mean", encoding.mean, None), ("log_variance", encoding.log_variance, None)
        ]
        if encoding.latents is not None:
            tensors.append(("latents", encoding.latents, None))
        return serialize(vae_pb2.EncodeResponse(model_version=model.version), tensors)

    def Reconstruct(
        self, request: vae_pb2.ReconstructRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Encode and decode each image, with its reconstruction error."""
        model = self._pipeline.model
        images, shape = self._images(request.images, model)
        result = self._pipeline.reconstruct(
            model, images, _seed(request), _deadline(context), context.is_active
        )
        response = vae_pb2.ReconstructResponse(
            reconstruction_error=result.errors.tolist(), model_version=model.version
        )
        return serialize(response, [("images", result.images, shape)])

    def Decode(
        self, request: vae_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Images for latent points."""
        model = self._pipeline.model
        latents = latents_from_proto(
            request.latents, "latents", model.latent_dim, self._pipeline.max_request_rows
        )
        images = self._pipeline.decode(model, latents, _deadline(context), context.is_active)
        response = vae_pb2.DecodeResponse(model_version=model.version)
        return serialize(response, [("images", images, (len(images), *model.image_shape))])

    def GetModelInfo(
        self, request: vae_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Describe the model being served and the request limits."""
        model = self._pipeline.model
        return serialize(vae_pb2.GetModelInfoResponse(
            name=model.name,
            version=model.version,
            latent_dim=model.latent_dim,
            image_shape=model.image_shape,
            training_metrics=model.training_metrics,
            max_request_rows=self._pipeline.max_request_rows,
            max_batch_size=self._pipeline.max_batch_size,
            encoder_sha256=model.encoder.sha256,
            decoder_sha256=model.decoder.sha256,
            max_interpolation_steps=self._pipeline.max_interpolation_steps,
        ), [])

    def Interpolate(
        self, request: vae_pb2.InterpolateRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Decode `steps` points on a path between two latent points or images."""
        model = self._pipeline.model
        start = _endpoint(request.start, "start", model)
        end = _endpoint(request.end, "end", model)
        steps = _interpolation_steps(request.steps, self._pipeline.max_interpolation_steps)
        result = self._pipeline.interpolate(
            model, start, end, steps, _interpolation_path(request.path), _deadline(context),
            context.is_active,
        )
        return serialize(vae_pb2.InterpolateResponse(model_version=model.version), [
            ("images", result.images, (steps, *model.image_shape)),
            ("latents", result.latents, None),
        ])

    def Variations(
        self, request: vae_pb2.VariationsRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Decode `count` draws from each image's posterior."""
        model = self._pipeline.model
        images, _ = self._images(request.images, model)
        count = _draws_per_image(
            "count", request.count, len(images), self._pipeline.max_request_rows
        )
        result = self._pipeline.variations(
            model, images, count, _variation_temperature(request), _seed(request),
            _deadline(context), context.is_active,
        )
        return serialize(vae_pb2.VariationsResponse(model_version=model.version), [
            ("images", result.images, (len(images), count, *model.image_shape)),
            ("latents", result.latents, None),
        ])

    def Score(
        self, request: vae_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Each image's ELBO and importance-weighted bound on log p(x), in nats."""
        model = self._pipeline.model
        images, _ = self._images(request.images, model)
        samples = _draws_per_image(
            "samples", request.samples, len(images), self._pipeline.max_request_rows
        )
        scores = self._pipeline.score(
            model, images, samples, _seed(request), _deadline(context), context.is_active
        )
        return serialize(vae_pb2.ScoreResponse(
            elbo=scores.elbo.tolist(),
            log_likelihood=scores.log_likelihood.tolist(),
            model_version=model.version,
        ), [])


# Checks of the latent-space requests' own fields, each raising InvalidArgument naming the field.

_PATHS = {
    vae_pb2.PATH_UNSPECIFIED: InterpolationPath.SPHERICAL,
    vae_pb2.PATH_LINEAR: InterpolationPath.LINEAR,
    vae_pb2.PATH_SPHERICAL: InterpolationPath.SPHERICAL,
}


def _endpoint(endpoint: vae_pb2.Endpoint, field: str, model: Model) -> Endpoint:
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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def _interpolation_steps(steps: int, max_steps: int) -> int:
    if not 2 <= steps <= max_steps:
        raise InvalidArgument("steps", f"must be between 2 and {max_steps}, got {steps}")
    return steps


def _interpolation_path(path: vae_pb2.Path.ValueType) -> InterpolationPath:
    known = _PATHS.get(path)
    if known is None:
        raise InvalidArgument("path", f"must be PATH_LINEAR, PATH_SPHERICAL or unset, got {path}")
    return known


def _draws_per_image(field: str, per_image: int, images: int, max_rows: int) -> int:
    """Draws per image, 1 or more, such that the images x draws rows run fit one request."""
    most = max_rows // images
    if not 1 <= per_image <= most:
        raise InvalidArgument(
            field,
            f"must be between 1 and {most} for {images} images (at most {max_rows} rows, "
            f"N x {field}, per request), got {per_image}",
        )
    return per_image


def _variation_temperature(request: vae_pb2.VariationsRequest) -> float:
    if not request.HasField("temperature"):
        return 1.0
    temperature = request.temperature
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise InvalidArgument(
            "temperature", f"must be >= 0 and at most {MAX_TEMPERATURE:g}, got {temperature:g}"
        )
    return temperature
