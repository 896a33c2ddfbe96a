"""The variational autoencoder: an MLP encoder to a Gaussian posterior, an MLP decoder to pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelSizes:
    """Layer widths; the defaults are the seed model's."""

    image_pixels: int = 784
    hidden: int = 256
    latent_dim: int = 2


class Encoder(nn.Module):
    """images (N, 784) in [0, 1] -> posterior mean and log-variance, each (N, latent_dim)."""

    def __init__(self, sizes: ModelSizes = ModelSizes()) -> None:
        super().__init__()
        self.hidden = nn.Linear(sizes.image_pixels, sizes.hidden)
        self.mean = nn.Linear(sizes.hidden, sizes.latent_dim)
        self.log_variance = nn.Linear(sizes.hidden, sizes.latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.hidden(images))
        return self.mean(features), self.log_variance(features)


class Decoder(nn.Module):
    """latents (N, latent_dim) -> pixel probabilities (N, 784) in [0, 1]."""

    def __init__(self, sizes: ModelSizes = ModelSizes()) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(sizes.latent_dim, sizes.hidden),
            nn.ReLU(),
            nn.Linear(sizes.hidden, sizes.image_pixels),
        )

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs; training uses them for a numerically stable loss."""
        return self.layers(latents)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(latents))


def reparameterize(
    mean: torch.Tensor, log_variance: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """z = mean + exp(0.5 * log_variance) * noise, with noise ~ N(0, I) supplied by the caller."""
    return mean + torch.exp(0.5 * log_variance) * noise


class VAE(nn.Module):
    def __init__(self, sizes: ModelSizes = ModelSizes()) -> None:
        super().__init__()
        self.sizes = sizes
        self.encoder = Encoder(sizes)
        self.decoder = Decoder(sizes)


@dataclass(frozen=True)
class ElboTerms:
    """Per-image means over a batch, in nats: reconstruction + kl = negative ELBO."""

    reconstruction: torch.Tensor
    kl: torch.Tensor

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.reconstruction + self.kl


def neg_elbo(
    model: VAE, images: torch.Tensor, generator: torch.Generator | None = None
) -> ElboTerms:
    """The negative ELBO per image with one reparameterized sample of the posterior.

    Reconstruction is the Bernoulli negative log-likelihood (binary cross-entropy summed over
    pixels); the KL divergence to N(0, I) is analytic.
    """
    mean, log_variance = model.encoder(images)
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    logits = model.decoder.logits(reparameterize(mean, log_variance, noise))
    reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum(1)
    kl = -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(1)
    return ElboTerms(reconstruction.mean(), kl.mean())
