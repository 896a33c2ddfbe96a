"""The gRPC face of the pipeline: requests checked and turned into numpy, responses built.

Each method checks its request's fields (service.validation), runs the pipeline, and returns its
response message with the tensors still numpy arrays beside it (a service.wire.Response); the
server registers service.wire's serializer, which turns it into the bytes gRPC sends. No
try/except here: exceptions travel to service.instrumentation, which maps them to status codes
in one place.

SampleStream is a generator: gRPC sends each chunk it yields before asking for the next, so a
stream makes its rows one chunk at a time, as fast as the caller reads them.
"""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from vae.v1 import vae_pb2

from service.errors import ShuttingDown, TooManyStreams
from service.noise import fresh_stream_seed
from service.pipeline import VAEPipeline
from service.tensors import images_as
from service.validation import (
    check_rows,
    chunk_rows_of,
    draws_per_image,
    endpoint_from_proto,
    images_from_proto,
    interpolation_path,
    interpolation_steps,
    latents_from_proto,
    output_dtype_of,
    stream_rows,
    temperature_of,
    variation_temperature,
)
from service.wire import Response, TensorField

# The trailing metadata of every SampleStream: the first row it did not send, where a caller
# resumes.
NEXT_INDEX_KEY = "vae-next-index"


@dataclass(frozen=True)
class StreamSettings:
    """SampleStream's limits, and `stopping`, which tells a stream to end before its next
    chunk (the server is draining)."""

    max_rows: int
    max_chunk_rows: int
    max_streams: int
    stopping: Callable[[], bool]


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline as a `time.monotonic()` instant, None when it set none.

    grpcio gives a call without a deadline one in its infinite future (time_remaining() near
    2**63 s, not None), a wait too long for threading to take; a deadline further away than
    the longest wait threading takes (about 292 years) is therefore none.
    """
    remaining = context.time_remaining()
    if remaining is None or remaining > threading.TIMEOUT_MAX:
        return None
    return time.monotonic() + remaining


def _seed(
    request: vae_pb2.SampleRequest | vae_pb2.EncodeRequest | vae_pb2.ReconstructRequest
    | vae_pb2.VariationsRequest | vae_pb2.ScoreRequest,
) -> int | None:
    return request.seed if request.HasField("seed") else None


class VAEServicer:
    """Implements vae.v1.VAEService on a VAEPipeline."""

    def __init__(self, pipeline: VAEPipeline, streams: StreamSettings) -> None:
        self._pipeline = pipeline
        self._streams = streams
        self._stream_slots = threading.BoundedSemaphore(streams.max_streams)

    def Sample(
        self, request: vae_pb2.SampleRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.SampleResponse]:
        """Draw `count` digits from the prior."""
        check_rows("count", request.count, self._pipeline.max_request_rows)
        temperature = temperature_of(request)
        output_dtype = output_dtype_of(request)
        model = self._pipeline.model
        images, latents = self._pipeline.sample(
            model, request.count, _seed(request), temperature, _deadline(context),
            context.is_active,
        )
        tensors = [TensorField(
            "images", images_as(images, output_dtype), (request.count, *model.image_shape)
        )]
        if request.return_latents:
            tensors.append(TensorField("latents", latents))
        return Response(vae_pb2.SampleResponse(model_version=model.version), tensors)

    def Encode(
        self, request: vae_pb2.EncodeRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.EncodeResponse]:
        """The posterior of each image, and a seeded draw from it when asked."""
        model = self._pipeline.model
        images, _ = images_from_proto(
            request.images, "images", model.image_shape, self._pipeline.max_request_rows
        )
        encoding = self._pipeline.encode(
            model, images, _seed(request), _deadline(context), context.is_active
        )
        tensors = [
            TensorField("mean", encoding.mean), TensorField("log_variance", encoding.log_variance)
        ]
        if encoding.latents is not None:
            tensors.append(TensorField("latents", encoding.latents))
        return Response(vae_pb2.EncodeResponse(model_version=model.version), tensors)

    def Reconstruct(
        self, request: vae_pb2.ReconstructRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.ReconstructResponse]:
        """Encode and decode each image, with its reconstruction error."""
        model = self._pipeline.model
        images, shape = images_from_proto(
            request.images, "images", model.image_shape, self._pipeline.max_request_rows
        )
        output_dtype = output_dtype_of(request)
        result = self._pipeline.reconstruct(
            model, images, _seed(request), _deadline(context), context.is_active
        )
        response = vae_pb2.ReconstructResponse(
            reconstruction_error=result.errors.tolist(), model_version=model.version
        )
        return Response(
            response, [TensorField("images", images_as(result.images, output_dtype), shape)]
        )

    def Decode(
        self, request: vae_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.DecodeResponse]:
        """Images for latent points."""
        model = self._pipeline.model
        latents = latents_from_proto(
            request.latents, "latents", model.latent_dim, self._pipeline.max_request_rows
        )
        output_dtype = output_dtype_of(request)
        images = self._pipeline.decode(model, latents, _deadline(context), context.is_active)
        return Response(
            vae_pb2.DecodeResponse(model_version=model.version),
            [TensorField(
                "images", images_as(images, output_dtype), (len(images), *model.image_shape)
            )],
        )

    def GetModelInfo(
        self, request: vae_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.GetModelInfoResponse]:
        """Describe the model being served and the request limits."""
        model = self._pipeline.model
        return Response(vae_pb2.GetModelInfoResponse(
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
            max_stream_rows=self._streams.max_rows,
            max_chunk_rows=self._streams.max_chunk_rows,
        ))

    def Interpolate(
        self, request: vae_pb2.InterpolateRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.InterpolateResponse]:
        """Decode `steps` points on a path between two latent points or images."""
        model = self._pipeline.model
        start = endpoint_from_proto(request.start, "start", model)
        end = endpoint_from_proto(request.end, "end", model)
        steps = interpolation_steps(request.steps, self._pipeline.max_interpolation_steps)
        path = interpolation_path(request.path)
        output_dtype = output_dtype_of(request)
        result = self._pipeline.interpolate(
            model, start, end, steps, path, _deadline(context), context.is_active
        )
        return Response(vae_pb2.InterpolateResponse(model_version=model.version), [
            TensorField(
                "images", images_as(result.images, output_dtype), (steps, *model.image_shape)
            ),
            TensorField("latents", result.latents),
        ])

    def Variations(
        self, request: vae_pb2.VariationsRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.VariationsResponse]:
        """Decode `count` draws from each image's posterior."""
        model = self._pipeline.model
        images, _ = images_from_proto(
            request.images, "images", model.image_shape, self._pipeline.max_request_rows
        )
        count = draws_per_image(
            "count", request.count, len(images), self._pipeline.max_request_rows
        )
        temperature = variation_temperature(request)
        output_dtype = output_dtype_of(request)
        result = self._pipeline.variations(
            model, images, count, temperature, _seed(request), _deadline(context),
            context.is_active,
        )
        return Response(vae_pb2.VariationsResponse(model_version=model.version), [
            TensorField(
                "images", images_as(result.images, output_dtype),
                (len(images), count, *model.image_shape),
            ),
            TensorField("latents", result.latents),
        ])

    def Score(
        self, request: vae_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> Response[vae_pb2.ScoreResponse]:
        """Each image's ELBO and importance-weighted bound on log p(x), in nats."""
        model = self._pipeline.model
        images, _ = images_from_proto(
            request.images, "images", model.image_shape, self._pipeline.max_request_rows
        )
        samples = draws_per_image(
            "samples", request.samples, len(images), self._pipeline.max_request_rows
        )
        scores = self._pipeline.score(
            model, images, samples, _seed(request), _deadline(context), context.is_active
        )
        return Response(vae_pb2.ScoreResponse(
            elbo=scores.elbo.tolist(),
            log_likelihood=scores.log_likelihood.tolist(),
            model_version=model.version,
        ), [])

    def SampleStream(
        self, request: vae_pb2.SampleStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[Response[vae_pb2.SampleChunk]]:
        """Rows start_index .. count - 1 of the dataset, chunk by chunk, every one decoded by
        the model the stream started on (a roll-out meanwhile does not change its version).

        At most `max_streams` run at once: each holds a handler thread until it ends, however
        slowly its caller reads. The slot is released when the generator finishes, fails or is
        closed (gRPC drops a stream whose caller has gone)."""
        stream_rows(request.count, request.start_index, self._streams.max_rows)
        chunk_rows = chunk_rows_of(request.chunk_rows, self._streams.max_chunk_rows)
        temperature = temperature_of(request)
        output_dtype = output_dtype_of(request)
        seed = request.seed if request.HasField("seed") else fresh_stream_seed()
        if not self._stream_slots.acquire(blocking=False):
            raise TooManyStreams(
                f"this server already runs {self._streams.max_streams} SampleStreams, its "
                "limit; retry with backoff"
            )
        try:
            yield from self._stream_chunks(
                request, seed, chunk_rows, temperature, output_dtype, context
            )
        finally:
            self._stream_slots.release()

    def _stream_chunks(
        self,
        request: vae_pb2.SampleStreamRequest,
        seed: int,
        chunk_rows: int,
        temperature: float,
        output_dtype: vae_pb2.DType.ValueType,
        context: grpc.ServicerContext,
    ) -> Iterator[Response[vae_pb2.SampleChunk]]:
        model = self._pipeline.model
        for first in range(request.start_index, request.count, chunk_rows):
            # Set before each chunk, so that however the stream ends, its trailer names the
            # first row the caller has not been sent.
            context.set_trailing_metadata(((NEXT_INDEX_KEY, str(first)),))
            if self._streams.stopping():
                raise ShuttingDown(
                    f"the server is shutting down; resume at start_index {first} on another "
                    "replica"
                )
            rows = min(chunk_rows, request.count - first)
            decoded = self._pipeline.sample_rows(
                model, seed, temperature, first, rows, _deadline(context), context.is_active
            )
            images = images_as(decoded.images, output_dtype)
            tensors = [TensorField("images", images, (rows, *model.image_shape))]
            if request.return_latents:
                tensors.append(TensorField("latents", decoded.latents))
            yield Response(
                vae_pb2.SampleChunk(start_index=first, model_version=model.version, seed=seed),
                tensors,
            )
        context.set_trailing_metadata(((NEXT_INDEX_KEY, str(request.count)),))
