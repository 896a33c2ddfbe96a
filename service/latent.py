"""The maths of the latent-space RPCs (Interpolate, Variations, Score), on numpy arrays alone.

The pipeline encodes, draws the noise and decodes; what it does with the arrays in between is
here: the path between two latent points, the posterior draws, and the bounds on log p(x) of a
Bernoulli-decoder VAE with a N(0, I) prior and a diagonal Gaussian posterior. Sums that a
caller compares between images run in float64, so the bounds do not depend on float32 rounding.
"""

import enum
import math

import numpy as np

# Pixel probabilities are clipped this far from 0 and 1 before taking logs.
BCE_EPSILON = 1e-7
# Endpoint directions whose angle has a smaller sine are treated as parallel (or opposite):
# their slerp differs from the straight path by less than float32 can show, and the great
# circle through them is computed from a difference that is mostly rounding.
_PARALLEL_SINE = 1e-9


class InterpolationPath(enum.Enum):
    """How an interpolation goes from one latent point to the other."""

    LINEAR = "linear"
    SPHERICAL = "spherical"


def interpolate_latents(
    start: np.ndarray, end: np.ndarray, steps: int, path: InterpolationPath
) -> np.ndarray:
    """`steps` (>= 2) float32 points from `start` to `end` (each (latent_dim,)) at
    t = i / (steps - 1); the first and last rows are `start` and `end` exactly.

    LINEAR: start + t (end - start). SPHERICAL: the direction turns along the great circle
    through both directions, evenly in angle (slerp), while the norm goes linearly from
    |start| to |end|. Where no direction or no single circle exists:
    - an endpoint at the origin, or both pointing the same way: LINEAR, which there is the
      same path (the direction stays put and the norm changes linearly);
    - opposite directions (every great circle through one passes the other): the direction
      turns towards the unit axis least aligned with `start` (the first one on a tie), so
      the path is still evenly spaced in angle and linear in norm; in one dimension, LINEAR.
    """
    t = np.linspace(0.0, 1.0, steps)[:, None]
    first, last = start.astype(np.float64), end.astype(np.float64)
    points = _spherical(first, last, t) if path is InterpolationPath.SPHERICAL else None
    if points is None:
        points = (1 - t) * first + t * last
    latents = points.astype(np.float32)
    latents[0], latents[-1] = start, end
    return latents


def _spherical(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """Slerp of the direction with a linear norm at each t; None where the path is LINEAR."""
    start_norm, end_norm = float(np.linalg.norm(start)), float(np.linalg.norm(end))
    if start_norm == 0 or end_norm == 0:
        return None
    start_unit, end_unit = start / start_norm, end / end_norm
    cosine = float(start_unit @ end_unit)
    # The part of end's direction at right angles to start's: where the circle turns to.
    across = end_unit - cosine * start_unit
    sine = float(np.linalg.norm(across))
    if sine >= _PARALLEL_SINE:
        toward = across / sine
    elif cosine > 0:
        return None
    else:
        perpendicular = _perpendicular(start_unit)
        if perpendicular is None:
            return None
        toward = perpendicular
    # atan2 keeps its precision at both ends, where arccos of the cosine loses half the digits.
    angle = math.atan2(sine, cosine)
    direction = np.cos(t * angle) * start_unit + np.sin(t * angle) * toward
    return ((1 - t) * start_norm + t * end_norm) * direction


def _perpendicular(unit: np.ndarray) -> np.ndarray | None:
    """A unit vector at right angles to `unit`: the unit axis least aligned with it, less its
    component along `unit`. None in one dimension, where there is none."""
    if unit.size < 2:
        return None
    axis = int(np.argmin(np.abs(unit)))
    perpendicular = -unit[axis] * unit
    perpendicular[axis] += 1.0
    # At least sqrt(1 - 1/latent_dim) long: the least aligned axis has |unit[axis]|^2 <= 1/dim.
    return perpendicular / np.linalg.norm(perpendicular)


def posterior_draws(
    mean: np.ndarray, log_variance: np.ndarray, eps: np.ndarray, temperature: float
) -> np.ndarray:
    """(N, K, latent_dim) draws from each of N diagonal Gaussian posteriors (N, latent_dim),
    with the standard deviation scaled by `temperature` (0: the mean), from standard normal
    `eps` (N, K, latent_dim).

    Computed in the arrays' dtype exactly as the contract documents it (VariationsRequest.seed),
    so a caller reproduces the float32 latents bit for bit with numpy.
    """
    return mean[:, None] + temperature * np.exp(0.5 * log_variance)[:, None] * eps


def bernoulli_log_likelihood(images: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """log p(x | z) in nats over the last axis: sum(x log p + (1 - x) log(1 - p)), with the
    pixel probabilities p clipped BCE_EPSILON away from 0 and 1 (x may lie anywhere in [0, 1])."""
    p = np.clip(probabilities, BCE_EPSILON, 1 - BCE_EPSILON)
    return (images * np.log(p) + (1 - images) * np.log1p(-p)).sum(axis=-1)


def elbo_and_iwae(
    images: np.ndarray,
    mean: np.ndarray,
    log_variance: np.ndarray,
    eps: np.ndarray,
    decoded_probabilities: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, in nats (float64): the ELBO and the importance-weighted bound on log p(x).

    `images` (N, pixels) in [0, 1]; the posterior `mean`, `log_variance` (N, latent_dim); the
    K draws were `posterior_draws(mean, log_variance, eps, 1.0)` with `eps` (N, K, latent_dim),
    and decoded to `decoded_probabilities` (N, K, pixels).

    ELBO: mean over k of log p(x | z_k), minus the analytic KL(q(z | x) || N(0, I)).
    IWAE: log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x), by log-sum-exp.
    """
    draws = posterior_draws(mean, log_variance, eps, 1.0).astype(np.float64)
    log_variance = log_variance.astype(np.float64)
    mean = mean.astype(np.float64)
    eps = eps.astype(np.float64)
    log_likelihood = bernoulli_log_likelihood(
        images.astype(np.float64)[:, None, :], decoded_probabilities.astype(np.float64)
    )
    kl = 0.5 * (np.exp(log_variance) + mean**2 - 1 - log_variance).sum(axis=-1)
    elbo = log_likelihood.mean(axis=1) - kl
    # log p(z) - log q(z | x): the two Gaussians' log(2 pi) terms cancel.
    log_prior_over_posterior = -0.5 * (draws**2).sum(axis=-1) + 0.5 * (
        eps**2 + log_variance[:, None]
    ).sum(axis=-1)
    log_weights = log_likelihood + log_prior_over_posterior
    largest = log_weights.max(axis=1)
    iwae = (
        largest
        + np.log(np.exp(log_weights - largest[:, None]).sum(axis=1))
        - math.log(log_weights.shape[1])
    )
    return elbo, iwae
