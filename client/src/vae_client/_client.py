"""VAEClient: the service's RPCs as Python calls that take and return numpy arrays."""

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import grpc
import numpy as np
from numpy.typing import ArrayLike
from vae.v1 import vae_pb2, vae_pb2_grpc

from vae_client._channel import open_channel
from vae_client._stream import StreamChunk, StreamRequest, resumed_stream
from vae_client._tensors import OutputDType, from_tensor, proto_dtype, to_tensor

# An interpolation endpoint of this many values is an image: no VAE of 28x28 digits has a
# latent space as large as its images.
IMAGE_PIXELS = 28 * 28

_PATHS = {"linear": vae_pb2.PATH_LINEAR, "spherical": vae_pb2.PATH_SPHERICAL}


@dataclass(frozen=True)
class SampledDigits:
    """Images (count, 28, 28), float32 in [0, 1] or uint8 as asked; latents
    (count, latent_dim) when asked for."""

    images: np.ndarray
    latents: np.ndarray | None
    model_version: str


@dataclass(frozen=True)
class Embeddings:
    """Posterior mean and log-variance (N, latent_dim); latents when a seed was given."""

    mean: np.ndarray
    log_variance: np.ndarray
    latents: np.ndarray | None
    model_version: str


@dataclass(frozen=True)
class Reconstructions:
    """Reconstructed images (shaped as the input) and each input's error in nats."""

    images: np.ndarray
    errors: np.ndarray
    model_version: str


@dataclass(frozen=True)
class ModelInfo:
    """What GetModelInfo says about the model being served."""

    name: str
    version: str
    latent_dim: int
    image_shape: tuple[int, ...]
    training_metrics: dict[str, float]
    max_request_rows: int
    max_batch_size: int
    encoder_sha256: str
    decoder_sha256: str
    max_interpolation_steps: int
    max_stream_rows: int
    max_chunk_rows: int


@dataclass(frozen=True)
class LatentPath:
    """Images (steps, 28, 28) decoded from the points (steps, latent_dim) of an interpolation;
    the first and last points are the endpoints' exactly."""

    images: np.ndarray
    latents: np.ndarray
    model_version: str


@dataclass(frozen=True)
class DigitVariations:
    """Images (N, count, 28, 28) decoded from posterior draws (N, count, latent_dim) of each
    of N images."""

    images: np.ndarray
    latents: np.ndarray
    model_version: str


@dataclass(frozen=True)
class LikelihoodScores:
    """Per image, in nats: the ELBO and the importance-weighted bound on log p(x), (N,) each."""

    elbo: np.ndarray
    log_likelihood: np.ndarray
    model_version: str


class VAEClient:
    """A blocking client of vae.v1.VAEService.

    Images may be (N, 784) or (N, 28, 28), float32 in [0, 1] or uint8 in [0, 255]. Calls that
    return images return float32 in [0, 1], or with `output_dtype="uint8"` the same images
    quantized by the server, numpy.rint(images * numpy.float32(255)).astype(numpy.uint8): a
    quarter of the bytes on the wire. Failed calls raise grpc.RpcError, whose `.code()` and
    `.details()` say what went wrong.

        with VAEClient("localhost:50051") as client:
            digits = client.sample(16, seed=7).images

    `credentials` (from `channel_credentials`) turn TLS on, and `server_name` overrides the
    name checked against the server's certificate. `connections` opens that many TCP
    connections and sends the calls over them in turn: a server's worker processes, or the pods
    behind a Kubernetes Service, share the load per connection, never per call, so one
    connection keeps all of a client's calls on one of them. Or pass a ready `channel` (one
    connection). A client may be used from several threads at once.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        channel: grpc.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        connections: int = 1,
        timeout_seconds: float | None = 30.0,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        if channel is not None and (connections > 1 or credentials or server_name):
            raise ValueError("a given channel is one connection with its own settings: pass "
                             "connections, credentials and server_name with a target instead")
        self._channels = [channel] if channel is not None else [
            open_channel(target, credentials, server_name=server_name, own_connection=True)
            for _ in range(connections)
        ]
        self._stubs = itertools.cycle(
            [vae_pb2_grpc.VAEServiceStub(each) for each in self._channels]
        )
        self._stubs_lock = threading.Lock()
        self.timeout_seconds = timeout_seconds

    def _next_stub(self) -> vae_pb2_grpc.VAEServiceStub:
        """The stub of the next connection in turn."""
        with self._stubs_lock:
            return next(self._stubs)

    def sample(
        self,
        count: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        return_latents: bool = False,
        output_dtype: OutputDType = "float32",
    ) -> SampledDigits:
        """Draw `count` digits from the prior; the same seed gives the same bytes."""
        response = self._next_stub().Sample(
            vae_pb2.SampleRequest(
                count=count, seed=seed, temperature=temperature, return_latents=return_latents,
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        latents = from_tensor(response.latents) if response.HasField("latents") else None
        return SampledDigits(from_tensor(response.images), latents, response.model_version)

    def sample_stream(
        self,
        count: int,
        *,
        seed: int | None = None,
        start_index: int = 0,
        temperature: float | None = None,
        output_dtype: Literal["float32", "uint8"] = "float32",
        chunk_rows: int = 0,
        return_latents: bool = False,
        resume_attempts: int = 6,
        timeout_seconds: float | None = None,
    ) -> Iterator[StreamChunk]:
        """Rows start_index .. count - 1 of a dataset of `count` synthetic digits, chunk by
        chunk (`chunk_rows` rows each; 0: the server's max_chunk_rows), as they arrive.

        Row i is a function of (model version, seed, temperature, i) alone: its latent is
        `default_rng([seed, i // 1024]).standard_normal((1024, latent_dim),
        dtype=float32)[i % 1024] * temperature`. Without a seed the server picks one, and every
        chunk reports it. A stream that ends with UNAVAILABLE (a replica shutting down) is
        resumed at the first row not yet received, with that seed, up to `resume_attempts`
        times in a row, so the chunks come as one uninterrupted sequence; should a resumed
        stream come from another model version, ModelVersionChanged is raised instead.
        `timeout_seconds` is each call's deadline (None: none). `output_dtype` "uint8" sends
        round(p x 255), a quarter of the bytes. Stopping early cancels the stream.
        """
        request = StreamRequest(count, temperature, output_dtype, chunk_rows, return_latents)
        return resumed_stream(
            self._next_stub(), request, start_index, seed,
            resume_attempts=resume_attempts, timeout_seconds=timeout_seconds,
        )

    def encode(self, images: np.ndarray, *, seed: int | None = None) -> Embeddings:
        """The posterior of each image; with a seed, also a repeatable draw from it."""
        response = self._next_stub().Encode(
            vae_pb2.EncodeRequest(images=to_tensor(np.asarray(images)), seed=seed),
            timeout=self.timeout_seconds,
        )
        latents = from_tensor(response.latents) if response.HasField("latents") else None
        return Embeddings(
            from_tensor(response.mean),
            from_tensor(response.log_variance),
            latents,
            response.model_version,
        )

    def reconstruct(
        self, images: np.ndarray, *, seed: int | None = None, output_dtype: OutputDType = "float32"
    ) -> Reconstructions:
        """Encode and decode each image (posterior mean, or a seeded draw) with its error."""
        response = self._next_stub().Reconstruct(
            vae_pb2.ReconstructRequest(
                images=to_tensor(np.asarray(images)), seed=seed,
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        return Reconstructions(
            from_tensor(response.images),
            np.array(response.reconstruction_error, dtype=np.float32),
            response.model_version,
        )

    def decode(self, latents: np.ndarray, *, output_dtype: OutputDType = "float32") -> np.ndarray:
        """Images (N, 28, 28) for (N, latent_dim) latent points."""
        response = self._next_stub().Decode(
            vae_pb2.DecodeRequest(
                latents=to_tensor(np.asarray(latents, dtype=np.float32)),
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        return from_tensor(response.images)

    def info(self) -> ModelInfo:
        """The model being served and the server's limits."""
        response = self._next_stub().GetModelInfo(
            vae_pb2.GetModelInfoRequest(), timeout=self.timeout_seconds
        )
        return ModelInfo(
            name=response.name,
            version=response.version,
            latent_dim=response.latent_dim,
            image_shape=tuple(response.image_shape),
            training_metrics=dict(response.training_metrics),
            max_request_rows=response.max_request_rows,
            max_batch_size=response.max_batch_size,
            encoder_sha256=response.encoder_sha256,
            decoder_sha256=response.decoder_sha256,
            max_interpolation_steps=response.max_interpolation_steps,
            max_stream_rows=response.max_stream_rows,
            max_chunk_rows=response.max_chunk_rows,
        )

    def interpolate(
        self,
        start: ArrayLike,
        end: ArrayLike,
        steps: int,
        *,
        path: Literal["spherical", "linear"] = "spherical",
        output_dtype: OutputDType = "float32",
    ) -> LatentPath:
        """`steps` (2 or more, start and end included) points from `start` to `end`, decoded.

        Each endpoint is an image or a latent point, told apart by its values: a uint8 array,
        or one of 784 values ((784,), (28, 28), (1, 784) or (1, 28, 28)), is an image, whose
        posterior mean is the point; anything else is a latent point, (latent_dim,) or
        (1, latent_dim). `path` "spherical" keeps to the shell where the prior puts its mass
        (the norm changes linearly while the direction turns evenly); "linear" is the
        straight line.
        """
        if path not in _PATHS:
            raise ValueError(f"path must be 'spherical' or 'linear', got {path!r}")
        response = self._next_stub().Interpolate(
            vae_pb2.InterpolateRequest(
                start=_endpoint(start), end=_endpoint(end), steps=steps, path=_PATHS[path],
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        return LatentPath(
            from_tensor(response.images), from_tensor(response.latents), response.model_version
        )

    def variations(
        self,
        images: np.ndarray,
        count: int,
        *,
        temperature: float | None = None,
        seed: int | None = None,
        output_dtype: OutputDType = "float32",
    ) -> DigitVariations:
        """`count` digits like each image: draws from its posterior, decoded.

        `temperature` scales the posterior's standard deviation (1.0 when None; 0 gives the
        posterior mean). With a seed the draws are bitwise repeatable, and are
        `mean[:, None] + temperature * exp(0.5 * log_variance)[:, None] * eps` in float32 with
        `eps = numpy.random.default_rng(seed).standard_normal((N, count, latent_dim),
        dtype=numpy.float32)` and `encode(images)`'s mean and log-variance.
        """
        response = self._next_stub().Variations(
            vae_pb2.VariationsRequest(
                images=to_tensor(np.asarray(images)),
                count=count,
                temperature=temperature,
                seed=seed,
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        return DigitVariations(
            from_tensor(response.images), from_tensor(response.latents), response.model_version
        )

    def score(
        self, images: np.ndarray, samples: int, *, seed: int | None = None
    ) -> LikelihoodScores:
        """How likely the model finds each image, from `samples` posterior draws per image.

        The importance-weighted bound tightens towards log p(x) as `samples` grows. The draws
        are those of `variations(images, samples, temperature=1.0, seed=seed)`, so a seed makes
        the scores bitwise repeatable.
        """
        response = self._next_stub().Score(
            vae_pb2.ScoreRequest(
                images=to_tensor(np.asarray(images)), samples=samples, seed=seed
            ),
            timeout=self.timeout_seconds,
        )
        return LikelihoodScores(
            np.array(response.elbo, dtype=np.float32),
            np.array(response.log_likelihood, dtype=np.float32),
            response.model_version,
        )

    def close(self) -> None:
        """Close the channels."""
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "VAEClient":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _endpoint(point: ArrayLike) -> vae_pb2.Endpoint:
    """An image if `point` is uint8 or holds IMAGE_PIXELS values, else a latent point."""
    array = np.asarray(point)
    if array.dtype == np.uint8 or array.size == IMAGE_PIXELS:
        return vae_pb2.Endpoint(image=to_tensor(array))
    return vae_pb2.Endpoint(latent=to_tensor(array))
