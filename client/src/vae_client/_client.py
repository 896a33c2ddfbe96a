"""VAEClient: the service's RPCs as Python calls that take and return numpy arrays."""

from dataclasses import dataclass
from types import TracebackType

import grpc
import numpy as np
from vae.v1 import vae_pb2, vae_pb2_grpc

from vae_client._channel import open_channel
from vae_client._tensors import OutputDType, from_tensor, proto_dtype, to_tensor


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


class VAEClient:
    """A blocking client of vae.v1.VAEService.

    Images may be (N, 784) or (N, 28, 28), float32 in [0, 1] or uint8 in [0, 255]. Calls that
    return images return float32 in [0, 1], or with `output_dtype="uint8"` the same images
    quantized by the server, numpy.rint(images * numpy.float32(255)).astype(numpy.uint8): a
    quarter of the bytes on the wire. Failed calls raise grpc.RpcError, whose `.code()` and
    `.details()` say what went wrong.

        with VAEClient("localhost:50051") as client:
            digits = client.sample(16, seed=7).images
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        channel: grpc.Channel | None = None,
        timeout_seconds: float | None = 30.0,
    ) -> None:
        self._channel = channel if channel is not None else open_channel(target)
        self._stub = vae_pb2_grpc.VAEServiceStub(self._channel)
        self.timeout_seconds = timeout_seconds

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
        response = self._stub.Sample(
            vae_pb2.SampleRequest(
                count=count, seed=seed, temperature=temperature, return_latents=return_latents,
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        latents = from_tensor(response.latents) if response.HasField("latents") else None
        return SampledDigits(from_tensor(response.images), latents, response.model_version)

    def encode(self, images: np.ndarray, *, seed: int | None = None) -> Embeddings:
        """The posterior of each image; with a seed, also a repeatable draw from it."""
        response = self._stub.Encode(
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
        response = self._stub.Reconstruct(
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
        response = self._stub.Decode(
            vae_pb2.DecodeRequest(
                latents=to_tensor(np.asarray(latents, dtype=np.float32)),
                output_dtype=proto_dtype(output_dtype),
            ),
            timeout=self.timeout_seconds,
        )
        return from_tensor(response.images)

    def info(self) -> ModelInfo:
        """The model being served and the server's limits."""
        response = self._stub.GetModelInfo(
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
        )

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "VAEClient":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
