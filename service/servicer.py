"""The gRPC face of the pipeline: protos in, numpy through VAEPipeline, serialized protos out.

Each method returns its response already serialized: the tensors go straight from numpy into
the bytes gRPC sends (service.wire), so the server registers the methods without a response
serializer. No try/except here: exceptions travel to service.instrumentation, which maps them
to status codes in one place.
"""

import time

import grpc
import numpy as np
from vae.v1 import vae_pb2

from service.model import Model
from service.pipeline import VAEPipeline
from service.tensors import images_from_proto, latents_from_proto
from service.wire import TensorField, serialize


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline as a `time.monotonic()` instant, None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _seed(
    request: vae_pb2.SampleRequest | vae_pb2.EncodeRequest | vae_pb2.ReconstructRequest,
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
        ), [])
