"""service.latent: interpolation paths, posterior draws and the bounds on log p(x).

The bounds are checked against a per-image float64 computation written out from the
densities, on real held-out digits run through the bundled ONNX graphs with onnxruntime.
"""

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.latent import (
    BCE_EPSILON,
    InterpolationPath,
    bernoulli_log_likelihood,
    elbo_and_iwae,
    interpolate_latents,
    posterior_draws,
)
from service.model import newest_version_dir
from service.noise import NoiseSource

pytestmark = pytest.mark.timeout(120)
LINEAR, SPHERICAL = InterpolationPath.LINEAR, InterpolationPath.SPHERICAL


class Graphs:
    """The bundled encoder and decoder as plain onnxruntime sessions."""

    def __init__(self, version_dir: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(version_dir / "encoder.onnx"), options)
        self.decoder = ort.InferenceSession(str(version_dir / "decoder.onnx"), options)

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_variance = self.encoder.run(["mean", "log_variance"], {"images": images})
        return mean, log_variance

    def decode(self, latents: np.ndarray) -> np.ndarray:
        (images,) = self.decoder.run(["images"], {"latents": latents})
        return images


@pytest.fixture(scope="module")
def graphs(model_dir: Path) -> Graphs:
    return Graphs(newest_version_dir(model_dir))


@pytest.fixture(scope="module")
def digits(heldout: np.ndarray) -> np.ndarray:
    """The held-out digits as the service sees them: float32 in [0, 1]."""
    return np.divide(heldout, 255, dtype=np.float32)


def score(graphs: Graphs, images: np.ndarray, samples: int, seed: int):
    """Encode, draw `samples` per image from `seed` as the service does, decode, score."""
    mean, log_variance = graphs.encode(images)
    eps = np.random.default_rng(seed).standard_normal(
        (len(images), samples, mean.shape[1]), dtype=np.float32
    )
    draws = posterior_draws(mean, log_variance, eps, 1.0)
    decoded = graphs.decode(draws.reshape(-1, mean.shape[1])).reshape(len(images), samples, -1)
    return mean, log_variance, eps, draws, decoded


def reference_bounds(image, mean, log_variance, draws, decoded) -> tuple[float, float, float]:
    """One image's ELBO (analytic KL), IWAE bound and ELBO with a sampled KL, in float64,
    from the densities written out term by term."""
    log_weights, log_likelihoods, sampled_kls = [], [], []
    for z, probabilities in zip(draws.tolist(), decoded.tolist(), strict=True):
        log_likelihood = math.fsum(
            x * math.log(min(max(p, BCE_EPSILON), 1 - BCE_EPSILON))
            + (1 - x) * math.log(1 - min(max(p, BCE_EPSILON), 1 - BCE_EPSILON))
            for x, p in zip(image.tolist(), probabilities, strict=True)
        )
        log_prior = log_posterior = 0.0
        for value, mu, log_var in zip(z, mean.tolist(), log_variance.tolist(), strict=True):
            sigma = math.exp(0.5 * log_var)
            log_prior += -0.5 * value**2 - 0.5 * math.log(2 * math.pi)
            log_posterior += (
                -0.5 * ((value - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
            )
        log_likelihoods.append(log_likelihood)
        log_weights.append(log_likelihood + log_prior - log_posterior)
        sampled_kls.append(log_posterior - log_prior)
    kl = math.fsum(
        -0.5 * log_var + 0.5 * (math.exp(log_var) + mu**2) - 0.5
        for mu, log_var in zip(mean.tolist(), log_variance.tolist(), strict=True)
    )
    elbo = math.fsum(log_likelihoods) / len(log_likelihoods) - kl
    top = max(log_weights)
    iwae = top + math.log(math.fsum(math.exp(w - top) for w in log_weights) / len(log_weights))
    sampled_elbo = math.fsum(log_weights) / len(log_weights)
    return elbo, iwae, sampled_elbo


def test_elbo_and_iwae_equal_a_per_image_float64_computation_on_real_digits(
    graphs, digits
) -> None:
    images = digits[:12]
    mean, log_variance, eps, draws, decoded = score(graphs, images, samples=6, seed=5)
    elbo, iwae = elbo_and_iwae(images, mean, log_variance, eps, decoded)
    assert elbo.shape == iwae.shape == (12,)
    for i in range(12):
        expected_elbo, expected_iwae, sampled_elbo = reference_bounds(
            images[i], mean[i], log_variance[i], draws[i], decoded[i]
        )
        assert elbo[i] == pytest.approx(expected_elbo, rel=1e-9, abs=1e-9)
        # The posterior density is evaluated at the float32 draws here and from eps there.
        assert iwae[i] == pytest.approx(expected_iwae, rel=1e-6)
        # Jensen's inequality, draw by draw: log of a mean >= the mean of the logs.
        assert iwae[i] >= sampled_elbo - 1e-6


def test_the_mean_elbo_of_the_heldout_digits_is_the_training_figure(
    graphs, digits, model_manifest
) -> None:
    mean, log_variance, eps, _, decoded = score(graphs, digits, samples=4, seed=0)
    elbo, _ = elbo_and_iwae(digits, mean, log_variance, eps, decoded)
    reported = model_manifest["training"]["heldout_neg_elbo_nats"]
    assert -elbo.mean() == pytest.approx(reported, rel=0.02)


def test_the_importance_weighted_bound_rises_above_the_elbo_and_tightens_with_more_draws(
    graphs, digits
) -> None:
    images = digits[:300]
    bounds = {}
    for samples in (1, 4, 32):
        mean, log_variance, eps, _, decoded = score(graphs, images, samples, seed=samples)
        elbo, iwae = elbo_and_iwae(images, mean, log_variance, eps, decoded)
        bounds[samples] = (elbo.mean(), iwae.mean())
    # With one draw the bound is an estimate of the ELBO itself (its KL sampled).
    assert bounds[1][1] == pytest.approx(bounds[1][0], abs=1.0)
    assert bounds[1][1] < bounds[4][1] < bounds[32][1]
    assert bounds[32][1] > bounds[32][0] + 1.0


def test_the_bounds_stay_finite_for_images_the_decoder_finds_impossible(graphs) -> None:
    # Saturated pixels against confident probabilities: log(0) without the clipping.
    images = np.tile(np.array([0.0, 1.0], dtype=np.float32), (3, 392))
    mean, log_variance, eps, _, decoded = score(graphs, images, samples=8, seed=1)
    elbo, iwae = elbo_and_iwae(images, mean, log_variance, eps, decoded)
    assert np.isfinite(elbo).all() and np.isfinite(iwae).all()
    assert (iwae < -300).all()


def test_bernoulli_log_likelihood_clips_probabilities_of_exactly_0_and_1() -> None:
    images = np.array([[1.0, 0.0, 0.5]])
    got = bernoulli_log_likelihood(images, np.array([[0.0, 1.0, 0.5]]))
    expected = 2 * math.log(BCE_EPSILON) + math.log(0.5)
    assert got == pytest.approx([expected], rel=1e-6)


def test_posterior_draws_are_the_documented_numpy_formula_from_the_services_noise(
    graphs, digits
) -> None:
    mean, log_variance = graphs.encode(digits[:5])
    count, seed, temperature = 7, 2024, np.float32(0.3)
    # The noise as the service draws it: one (N x count, latent_dim) array, per request.
    eps = NoiseSource().normal(5 * count, 2, seed).reshape(5, count, 2)
    documented = np.random.default_rng(seed).standard_normal((5, count, 2), dtype=np.float32)
    np.testing.assert_array_equal(eps, documented)
    expected = mean[:, None] + temperature * np.exp(0.5 * log_variance)[:, None] * documented
    draws = posterior_draws(mean, log_variance, eps, float(temperature))
    assert draws.dtype == np.float32 and draws.shape == (5, count, 2)
    np.testing.assert_array_equal(draws, expected)


def test_temperature_0_gives_the_posterior_mean_and_the_spread_scales_with_temperature(
    graphs, digits
) -> None:
    mean, log_variance = graphs.encode(digits[:3])
    eps = np.random.default_rng(3).standard_normal((3, 20000, 2), dtype=np.float32)
    at_zero = posterior_draws(mean, log_variance, eps, 0.0)
    np.testing.assert_array_equal(at_zero, np.broadcast_to(mean[:, None], at_zero.shape))
    spread = posterior_draws(mean, log_variance, eps, 2.5).std(axis=1)
    np.testing.assert_allclose(spread, 2.5 * np.exp(0.5 * log_variance), rtol=0.03)


def norms(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points.astype(np.float64), axis=1)


def angles_from(points: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Angles of `points` from `origin`: 2 atan2(|u - v|, |u + v|) of the unit vectors, which
    unlike arccos of their dot product keeps its precision near 0 and pi."""
    units = points.astype(np.float64) / norms(points)[:, None]
    first = origin.astype(np.float64) / np.linalg.norm(origin)
    return 2 * np.arctan2(norms(units - first), norms(units + first))


@pytest.fixture(scope="module")
def digit_means(graphs, digits) -> np.ndarray:
    """Latent points of real digits: endpoints a caller would interpolate between."""
    return graphs.encode(digits[:40])[0]


@pytest.mark.parametrize("path", [LINEAR, SPHERICAL])
def test_the_first_and_last_points_are_the_endpoints_exactly(path, digit_means) -> None:
    for start, end in zip(digit_means[:20], digit_means[20:], strict=True):
        for steps in (2, 3, 10):
            latents = interpolate_latents(start, end, steps, path)
            assert latents.shape == (steps, 2) and latents.dtype == np.float32
            assert latents[0].tobytes() == start.tobytes()
            assert latents[-1].tobytes() == end.tobytes()


def test_linear_points_are_evenly_spaced_on_the_straight_line(digit_means) -> None:
    start, end = digit_means[0], digit_means[1]
    latents = interpolate_latents(start, end, 11, LINEAR)
    for i, point in enumerate(latents):
        np.testing.assert_allclose(point, start + (end - start) * (i / 10), rtol=1e-6, atol=1e-6)


def test_spherical_points_have_norms_linear_and_angles_evenly_spaced(digit_means) -> None:
    checked = 0
    for start, end in zip(digit_means[:20], digit_means[20:], strict=True):
        latents = interpolate_latents(start, end, 9, SPHERICAL)
        t = np.linspace(0, 1, 9)
        expected_norms = (1 - t) * np.linalg.norm(start) + t * np.linalg.norm(end)
        np.testing.assert_allclose(norms(latents), expected_norms, rtol=1e-6)
        angles = angles_from(latents, start)
        if angles[-1] > 0.1:
            np.testing.assert_allclose(angles, t * angles[-1], rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked >= 10


def test_spherical_matches_the_textbook_slerp_formula_in_many_dimensions() -> None:
    rng = np.random.default_rng(9)
    for _ in range(20):
        scales = rng.uniform(0.1, 5, (2, 1))
        start, end = (rng.standard_normal((2, 16)) * scales).astype(np.float32)
        a, b = start.astype(np.float64), end.astype(np.float64)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        theta = math.acos(float(a @ b) / (na * nb))
        for i, point in enumerate(interpolate_latents(start, end, 7, SPHERICAL)):
            t = i / 6
            direction = (math.sin((1 - t) * theta) * a / na + math.sin(t * theta) * b / nb) / (
                math.sin(theta)
            )
            np.testing.assert_allclose(point, ((1 - t) * na + t * nb) * direction, atol=1e-5)


def test_spherical_is_linear_when_an_endpoint_is_the_origin_or_both_point_the_same_way(
    digit_means,
) -> None:
    point = digit_means[0]
    for start, end in [
        (np.zeros(2, np.float32), point),
        (point, np.zeros(2, np.float32)),
        (np.zeros(2, np.float32), np.zeros(2, np.float32)),
        (point, point * np.float32(3)),
        (point, point),
    ]:
        spherical = interpolate_latents(start, end, 6, SPHERICAL)
        np.testing.assert_array_equal(spherical, interpolate_latents(start, end, 6, LINEAR))
        assert np.isfinite(spherical).all()


def test_opposite_endpoints_turn_towards_the_axis_least_aligned_with_start() -> None:
    start = np.array([0.6, 0.8], np.float32)
    end = -2 * start
    latents = interpolate_latents(start, end, 5, SPHERICAL)
    np.testing.assert_allclose(norms(latents), [1, 1.25, 1.5, 1.75, 2], rtol=1e-6)
    np.testing.assert_allclose(angles_from(latents, start), np.linspace(0, math.pi, 5), atol=1e-6)
    # Axis 0 is the least aligned with start: the halfway point is e0 less its part along
    # start, (0.64, -0.48), scaled to the norm there, 1.5.
    np.testing.assert_allclose(latents[2], [1.2, -0.9], atol=1e-6)
    np.testing.assert_array_equal(latents, interpolate_latents(start, end, 5, SPHERICAL))
    # In one dimension there is no way round: the straight line.
    line = interpolate_latents(np.array([1.0], np.float32), np.array([-1.0], np.float32), 3,
                               SPHERICAL)
    np.testing.assert_array_equal(line, [[1.0], [0.0], [-1.0]])


def test_nearly_opposite_endpoints_still_take_a_half_turn_with_linear_norms() -> None:
    start = np.array([1.0, 1e-12, 0.0], np.float32)
    end = np.array([-3.0, 0.0, 0.0], np.float32)
    latents = interpolate_latents(start, end, 3, SPHERICAL)
    np.testing.assert_allclose(norms(latents), [1, 2, 3], rtol=1e-6)
    assert abs(latents[1][0]) < 1e-6
