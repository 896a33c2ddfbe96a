"""VAEClient's interpolate, variations and score against a real server: numpy arrays in and out,
the seeded results those the contract documents, bad input a grpc.RpcError naming the field."""

import grpc
import numpy as np
import pytest

from service.latent import InterpolationPath, elbo_and_iwae, interpolate_latents

pytestmark = pytest.mark.timeout(120)


def documented_noise(seed: int, images: int, per_image: int) -> np.ndarray:
    """The noise of VariationsRequest.seed, as the contract writes it."""
    return np.random.default_rng(seed).standard_normal((images, per_image, 2), dtype=np.float32)


# --- interpolate ---


def test_interpolating_latent_points_gives_the_path_and_its_decoded_images(
    client, model_manifest
) -> None:
    start, end = np.array([-1.5, 0.25], np.float32), [0.75, 2.0]
    morph = client.interpolate(start, end, 6, path="linear")
    assert morph.images.shape == (6, 28, 28) and morph.latents.shape == (6, 2)
    assert morph.images.dtype == morph.latents.dtype == np.float32
    np.testing.assert_array_equal(
        morph.latents,
        interpolate_latents(start, np.float32(end), 6, InterpolationPath.LINEAR),
    )
    np.testing.assert_array_equal(morph.images, client.decode(morph.latents))
    assert morph.model_version == model_manifest["version"]


def test_image_endpoints_in_any_of_their_forms_are_their_posterior_means(client, heldout) -> None:
    first, second = heldout[3], heldout[8]
    means = client.encode(np.stack([first, second])).mean
    as_flat_uint8 = client.interpolate(first, second, 5)
    as_square_floats = client.interpolate(
        (first / np.float32(255)).reshape(28, 28), second.reshape(1, 28, 28), 5
    )
    mixed = client.interpolate(first[None], means[1], 5, path="spherical")
    for morph in (as_flat_uint8, as_square_floats, mixed):
        np.testing.assert_array_equal(
            morph.latents, interpolate_latents(means[0], means[1], 5, InterpolationPath.SPHERICAL)
        )
        np.testing.assert_array_equal(morph.images, as_flat_uint8.images)


def test_an_unknown_path_is_refused_before_any_call(client) -> None:
    with pytest.raises(ValueError, match="path must be 'spherical' or 'linear', got 'straight'"):
        client.interpolate([0, 0], [1, 1], 3, path="straight")  # type: ignore[arg-type]


def test_info_reports_the_interpolation_step_limit(client) -> None:
    assert client.info().max_interpolation_steps == 4096


# --- variations ---


def test_seeded_variations_are_the_documented_posterior_draws(client, heldout) -> None:
    digits = heldout[:3].reshape(3, 28, 28)
    variations = client.variations(digits, 4, temperature=0.5, seed=21)
    assert variations.images.shape == (3, 4, 28, 28) and variations.latents.shape == (3, 4, 2)
    posterior = client.encode(digits)
    expected = posterior.mean[:, None] + np.float32(0.5) * np.exp(
        0.5 * posterior.log_variance
    )[:, None] * documented_noise(21, 3, 4)
    np.testing.assert_array_equal(variations.latents, expected)
    np.testing.assert_array_equal(
        variations.images.reshape(12, 28, 28), client.decode(expected.reshape(12, 2))
    )
    again = client.variations(digits, 4, temperature=0.5, seed=21)
    assert again.images.tobytes() == variations.images.tobytes()


def test_variations_at_temperature_0_are_the_posterior_mean_and_the_default_is_1(
    client, heldout
) -> None:
    digits = heldout[20:22]
    posterior = client.encode(digits)
    at_zero = client.variations(digits, 2, temperature=0)
    np.testing.assert_array_equal(at_zero.latents, np.repeat(posterior.mean[:, None], 2, axis=1))
    default = client.variations(digits, 2, seed=4)
    np.testing.assert_array_equal(default.latents, client.variations(
        digits, 2, temperature=1.0, seed=4).latents)


def test_the_largest_variations_response_fits_the_message_limits(client, heldout) -> None:
    assert client.variations(heldout[:1], 4096, seed=1).images.shape == (1, 4096, 28, 28)


# --- score ---


def test_seeded_scores_are_the_bounds_of_the_documented_draws(client, heldout) -> None:
    digits = heldout[:5]
    scores = client.score(digits, 8, seed=3)
    assert scores.elbo.shape == scores.log_likelihood.shape == (5,)
    assert scores.elbo.dtype == scores.log_likelihood.dtype == np.float32
    posterior = client.encode(digits)
    eps = documented_noise(3, 5, 8)
    draws = posterior.mean[:, None] + np.exp(0.5 * posterior.log_variance)[:, None] * eps
    probabilities = client.decode(draws.reshape(40, 2)).reshape(5, 8, 784)
    elbo, bound = elbo_and_iwae(
        digits / np.float32(255), posterior.mean, posterior.log_variance, eps, probabilities
    )
    np.testing.assert_array_equal(scores.elbo, elbo.astype(np.float32))
    np.testing.assert_array_equal(scores.log_likelihood, bound.astype(np.float32))
    assert np.all(scores.log_likelihood >= scores.elbo)


# --- errors ---


@pytest.mark.parametrize(
    ("call", "field"),
    [
        pytest.param(lambda c, d: c.interpolate([0, 0], [1, 1], 1), "steps", id="one step"),
        pytest.param(
            lambda c, d: c.interpolate([0, 0, 0], [1, 1], 3), "start.latent.shape",
            id="latent of three values",
        ),
        # uint8 values are an image, whatever their number.
        pytest.param(
            lambda c, d: c.interpolate([0, 0], np.zeros(2, np.uint8), 3), "end.image.shape",
            id="uint8 latent",
        ),
        pytest.param(
            lambda c, d: c.interpolate([0, 0], np.full(784, 2.0), 3), "end.image.data",
            id="image above one",
        ),
        pytest.param(
            lambda c, d: c.variations(d, 1, temperature=-1), "temperature",
            id="negative temperature",
        ),
        pytest.param(lambda c, d: c.variations(d, 2049), "count", id="too many variations"),
        pytest.param(lambda c, d: c.score(d, 0), "samples", id="no samples"),
        pytest.param(
            lambda c, d: c.score(np.zeros((2, 5), np.float32), 1), "images.shape",
            id="not images",
        ),
    ],
)
def test_bad_input_raises_invalid_argument_naming_the_field(client, heldout, call, field) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(client, heldout[:2])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: "), raised.value.details()
