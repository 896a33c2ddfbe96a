"""What the service does, free of gRPC: sampling, encoding, reconstructing and decoding.

Each method takes the Model it was called with (read once per request from the ModelHolder, so
a model swap never mixes versions within a request), draws its noise before its rows join a
batch (so seeded results do not depend on what else is batched with them), and hands its rows
to the graph's batcher with the caller's deadline and a way to tell whether it still waits.

Its arguments have passed service.validation already: the pipeline checks nothing itself.
"""

from dataclasses import dataclass

import numpy as np

from service.batching import Batcher, IsActive
from service.model import Model, ModelHolder
from service.noise import NoiseSource

# Pixel probabilities are clipped this far from 0 and 1 before taking logs.
_BCE_EPSILON = 1e-7


@dataclass(frozen=True)
class Encoding:
    """The posterior of each image, and latents drawn from it when a seed was given."""

    mean: np.ndarray
    log_variance: np.ndarray
    latents: np.ndarray | None


@dataclass(frozen=True)
class Reconstruction:
    """Decoded images and each input's binary cross-entropy under its reconstruction (nats)."""

    images: np.ndarray
    errors: np.ndarray


class VAEPipeline:
    """The VAE's operations on top of one batcher per graph.

    `max_request_rows` and `max_batch_size` are the service's limits, as the servicer checks
    requests against them and GetModelInfo reports them.
    """

    def __init__(
        self,
        models: ModelHolder,
        encoder: Batcher,
        decoder: Batcher,
        max_request_rows: int,
        noise: NoiseSource | None = None,
    ) -> None:
        self._models = models
        self._encoder = encoder
        self._decoder = decoder
        self.max_request_rows = max_request_rows
        self.max_batch_size = decoder.max_batch_size
        self._noise = noise if noise is not None else NoiseSource()

    @property
    def model(self) -> Model:
        """The model a new request should use."""
        return self._models.current

    def sample(
        self,
        model: Model,
        count: int,
        seed: int | None,
        temperature: float,
        deadline: float | None,
        is_active: IsActive = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`count` images decoded from prior draws scaled by `temperature`; (images, latents)."""
        latents = self._noise.normal(count, model.latent_dim, seed)
        if temperature != 1.0:
            latents *= temperature
        (images,) = self._decoder.run(model.decoder, latents, deadline, is_active)
        return images, latents

    def encode(
        self, model: Model, images: np.ndarray, seed: int | None, deadline: float | None,
        is_active: IsActive = None,
    ) -> Encoding:
        """The posterior of each (N, pixels) image; with a seed, also a repeatable draw from it."""
        noise = None if seed is None else self._noise.normal(len(images), model.latent_dim, seed)
        mean, log_variance = self._encoder.run(model.encoder, images, deadline, is_active)
        latents = None if noise is None else _reparameterize(mean, log_variance, noise)
        return Encoding(mean, log_variance, latents)

    def reconstruct(
        self, model: Model, images: np.ndarray, seed: int | None, deadline: float | None,
        is_active: IsActive = None,
    ) -> Reconstruction:
        """Encode then decode: the posterior mean, or with a seed a posterior draw."""
        encoding = self.encode(model, images, seed, deadline, is_active)
        latents = encoding.mean if encoding.latents is None else encoding.latents
        (decoded,) = self._decoder.run(model.decoder, latents, deadline, is_active)
        return Reconstruction(decoded, _binary_cross_entropy(images, decoded))

    def decode(
        self, model: Model, latents: np.ndarray, deadline: float | None,
        is_active: IsActive = None,
    ) -> np.ndarray:
        """Images for (N, latent_dim) latent points."""
        (images,) = self._decoder.run(model.decoder, latents, deadline, is_active)
        return images


def _reparameterize(mean: np.ndarray, log_variance: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return mean + np.exp(0.5 * log_variance) * noise


def _binary_cross_entropy(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per row: -sum(x log p + (1 - x) log(1 - p)), in nats."""
    p = np.clip(probabilities, _BCE_EPSILON, 1 - _BCE_EPSILON)
    return -(targets * np.log(p) + (1 - targets) * np.log1p(-p)).sum(axis=1)
