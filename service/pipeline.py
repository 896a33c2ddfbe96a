"""What the service does, free of gRPC: sampling, encoding, reconstructing and decoding, and
the latent-space operations (interpolating, variations, scoring) on top of them.

Each method takes the Model it was called with (read once per request from the ModelHolder, so
a model swap never mixes versions within a request), draws its noise before its rows join a
batch (so seeded results do not depend on what else is batched with them), and hands its rows
to the graph's batcher with the caller's deadline and a way to tell whether it still waits.

Its arguments have passed service.validation already: the pipeline checks nothing itself.
"""

from dataclasses import dataclass

import numpy as np

from service.batching import Batcher, IsActive
from service.latent import (
    InterpolationPath,
    bernoulli_log_likelihood,
    elbo_and_iwae,
    interpolate_latents,
    posterior_draws,
)
from service.model import Model, ModelHolder
from service.noise import NoiseSource, stream_latents


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


@dataclass(frozen=True)
class Endpoint:
    """One end of an interpolation: a (latent_dim,) latent point, or when `is_image` a
    (pixels,) image whose posterior mean is the point."""

    values: np.ndarray
    is_image: bool


@dataclass(frozen=True)
class DecodedLatents:
    """Latent points (rows, ..., latent_dim) and their images (rows, pixels)."""

    images: np.ndarray
    latents: np.ndarray


@dataclass(frozen=True)
class Scores:
    """Per image, in nats: the ELBO and the importance-weighted bound on log p(x)."""

    elbo: np.ndarray
    log_likelihood: np.ndarray


class VAEPipeline:
    """The VAE's operations on top of one batcher per graph.

    `max_request_rows` and `max_batch_size` are the service's limits, as the servicer checks
    requests against them and GetModelInfo reports them. A SampleStream chunk enters the
    decoder's batcher `stream_piece_rows` rows at a time: the batcher runs rows in arrival
    order, so a unary call queued behind a stream waits for one piece, not a whole chunk.
    """

    def __init__(
        self,
        models: ModelHolder,
        encoder: Batcher,
        decoder: Batcher,
        max_request_rows: int,
        stream_piece_rows: int,
        noise: NoiseSource | None = None,
    ) -> None:
        self._models = models
        self._encoder = encoder
        self._decoder = decoder
        self.max_request_rows = max_request_rows
        # Each step of an interpolation is one decoded row.
        self.max_interpolation_steps = max_request_rows
        self.max_batch_size = decoder.max_batch_size
        self._stream_piece_rows = stream_piece_rows
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

    def sample_rows(
        self,
        model: Model,
        seed: int,
        temperature: float,
        first_row: int,
        rows: int,
        deadline: float | None,
        is_active: IsActive = None,
    ) -> DecodedLatents:
        """Rows first_row .. first_row + rows - 1 of the SampleStream dataset of `seed` and
        `temperature`: each row's latent is a function of the row's index alone
        (service.noise.stream_latents), decoded in batcher requests of at most
        `stream_piece_rows` rows, one after the other."""
        latents = stream_latents(seed, first_row, rows, model.latent_dim, temperature)
        piece = self._stream_piece_rows
        images = [
            self._decoder.run(model.decoder, latents[start:start + piece], deadline, is_active)[0]
            for start in range(0, rows, piece)
        ]
        return DecodedLatents(images[0] if len(images) == 1 else np.concatenate(images), latents)

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
        return Reconstruction(decoded, -bernoulli_log_likelihood(images, decoded))

    def decode(
        self, model: Model, latents: np.ndarray, deadline: float | None,
        is_active: IsActive = None,
    ) -> np.ndarray:
        """Images for (N, latent_dim) latent points."""
        (images,) = self._decoder.run(model.decoder, latents, deadline, is_active)
        return images

    def interpolate(
        self, model: Model, start: Endpoint, end: Endpoint, steps: int, path: InterpolationPath,
        deadline: float | None, is_active: IsActive = None,
    ) -> DecodedLatents:
        """`steps` points from `start` to `end` along `path`, decoded; image endpoints are
        encoded (together, in one request) to their posterior means first."""
        to_encode = [e.values for e in (start, end) if e.is_image]
        means = (
            list(self._encoder.run(model.encoder, np.stack(to_encode), deadline, is_active)[0])
            if to_encode else []
        )
        first = means.pop(0) if start.is_image else start.values
        last = means.pop(0) if end.is_image else end.values
        latents = interpolate_latents(first, last, steps, path)
        (decoded,) = self._decoder.run(model.decoder, latents, deadline, is_active)
        return DecodedLatents(decoded, latents)

    def variations(
        self, model: Model, images: np.ndarray, count: int, temperature: float,
        seed: int | None, deadline: float | None, is_active: IsActive = None,
    ) -> DecodedLatents:
        """`count` draws from each (N, pixels) image's posterior, the standard deviation scaled
        by `temperature`, decoded: latents (N, count, latent_dim), images (N x count, pixels)."""
        eps = self._posterior_noise(model, len(images), count, seed)
        mean, log_variance = self._encoder.run(model.encoder, images, deadline, is_active)
        latents = posterior_draws(mean, log_variance, eps, temperature)
        (decoded,) = self._decoder.run(
            model.decoder, latents.reshape(-1, model.latent_dim), deadline, is_active
        )
        return DecodedLatents(decoded, latents)

    def score(
        self, model: Model, images: np.ndarray, samples: int, seed: int | None,
        deadline: float | None, is_active: IsActive = None,
    ) -> Scores:
        """Each (N, pixels) image's ELBO and importance-weighted bound from `samples`
        posterior draws."""
        eps = self._posterior_noise(model, len(images), samples, seed)
        mean, log_variance = self._encoder.run(model.encoder, images, deadline, is_active)
        draws = posterior_draws(mean, log_variance, eps, 1.0)
        (decoded,) = self._decoder.run(
            model.decoder, draws.reshape(-1, model.latent_dim), deadline, is_active
        )
        elbo, bound = elbo_and_iwae(
            images, mean, log_variance, eps, decoded.reshape(len(images), samples, -1)
        )
        return Scores(elbo, bound)

    def _posterior_noise(
        self, model: Model, images: int, per_image: int, seed: int | None
    ) -> np.ndarray:
        """(images, per_image, latent_dim) standard normal noise: with a seed, numpy's
        default_rng(seed).standard_normal of that shape (one draw fills it row-major)."""
        noise = self._noise.normal(images * per_image, model.latent_dim, seed)
        return noise.reshape(images, per_image, model.latent_dim)


def _reparameterize(mean: np.ndarray, log_variance: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return mean + np.exp(0.5 * log_variance) * noise
