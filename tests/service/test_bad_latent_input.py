"""Interpolate, Variations and Score fuzzed as test_bad_input fuzzes the other RPCs.

Random tensors, shapes, dtypes, steps, counts, samples, temperatures, paths and endpoint
oneofs (either form, neither, the field unset, or a second endpoint merged over the first as
protobuf merges a repeated field on the wire) are judged by an oracle written from vae.proto: a
valid request is answered, and answered as the model run in this process says; an invalid one
is refused with INVALID_ARGUMENT naming a wrong field; an oversized one with RESOURCE_EXHAUSTED;
never INTERNAL or any other status. Seeded well-formed calls to every RPC, these three included,
keep getting their reference answers meanwhile and after, and the server stays up, quiet and
bounded in memory (test_bad_input's `unharmed`).
"""

import math

import grpc
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from vae.v1 import vae_pb2

from service.latent import InterpolationPath, elbo_and_iwae, interpolate_latents, posterior_draws
from service.tensors import to_proto
from service.validation import MAX_ABS_LATENT, MAX_TEMPERATURE
from tests.service import test_bad_input
from tests.service.test_bad_input import (
    CALL_SECONDS,
    FLOAT32,
    FUZZ,
    INF,
    LATENT_SPECIALS,
    LATENTS,
    MAX_MESSAGE_BYTES,
    MAX_ROWS,
    NAN,
    PIXEL_SPECIALS,
    PIXELS,
    RAW_BODIES,
    SEEDS,
    UINT8,
    array,
    dtypes,
    image_problems,
    mostly,
    parsed,
    request_pixels,
    shapes,
    tensor_data,
    tensor_problems,
    tensors,
    with_optional,
)
from tests.traffic import Traffic

pytestmark = pytest.mark.timeout(300)

# The fuzz server, its channel, the model run in this process and the `unharmed` check are the
# ones the other RPCs are fuzzed with; named here, they give this module a server of its own.
server = test_bad_input.server
channel = test_bad_input.channel
reference_model = test_bad_input.reference_model
unharmed = test_bad_input.unharmed

METHODS = ["Interpolate", "Variations", "Score"]
LATENT_DIM = 2
ENDPOINT_FORMS = {"latent": [[LATENT_DIM]], "image": [[784], [28, 28]]}
PATHS = {
    vae_pb2.PATH_UNSPECIFIED: InterpolationPath.SPHERICAL,
    vae_pb2.PATH_LINEAR: InterpolationPath.LINEAR,
    vae_pb2.PATH_SPHERICAL: InterpolationPath.SPHERICAL,
}
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture
def latent_rpcs_unharmed(server, heldout, unharmed):
    """Besides `unharmed`: seeded well-formed calls of the three RPCs, run beside the fuzzing
    and after it, every one answered as before it began."""
    calls = [
        ("Variations", vae_pb2.VariationsRequest(
            images=to_proto(heldout[:2]), count=3, temperature=0.5, seed=5)),
        ("Score", vae_pb2.ScoreRequest(images=to_proto(heldout[2:4]), samples=4, seed=6)),
        ("Interpolate", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(image=to_proto(heldout[4])),
            end=vae_pb2.Endpoint(latent=to_proto(np.array([1, -1], np.float32))),
            steps=6, path=vae_pb2.PATH_LINEAR)),
        # Opposite endpoints: the spherical path's special case.
        ("Interpolate", vae_pb2.InterpolateRequest(
            start=vae_pb2.Endpoint(latent=to_proto(np.array([0.5, 0.5], np.float32))),
            end=vae_pb2.Endpoint(latent=to_proto(np.array([-1, -1], np.float32))), steps=5)),
    ]
    with Traffic(server.target, calls, callers=1) as traffic:
        traffic.wait_answered(1)
        yield
        traffic.wait_answered(1)
    traffic.assert_clean()


# --- the oracle ---


def endpoint_problems(endpoint: vae_pb2.Endpoint, field: str) -> set[str]:
    """The fields of one Interpolate endpoint that break the contract."""
    form = endpoint.WhichOneof("point")
    if form is None:
        return {field}
    tensor, name, allowed = getattr(endpoint, form), f"{field}.{form}", ENDPOINT_FORMS[form]
    shape = list(tensor.shape)
    if shape[:1] == [1] and shape[1:] in allowed:
        row = tensor
    elif shape in allowed:
        row = vae_pb2.Tensor(shape=[1, *shape], dtype=tensor.dtype, data=tensor.data)
    else:
        return {f"{name}.shape"}
    if form == "latent":
        return tensor_problems(row, name, allowed, {FLOAT32: 4},
                               lambda v: np.abs(v).max() <= MAX_ABS_LATENT)
    return tensor_problems(row, name, allowed, {FLOAT32: 4, UINT8: 1},
                           lambda v: v.min() >= 0 and v.max() <= 1)


def draws_problems(request, field: str) -> set[str]:
    """Variations' or Score's images, and their draws per image (`field`) that must fit N x
    draws into one request."""
    if problems := image_problems(request.images):
        return problems
    images = request.images.shape[0]
    return set() if 1 <= getattr(request, field) <= MAX_ROWS // images else {field}


def request_problems(method: str, request) -> set[str]:
    """Which fields of a parsed request are wrong (empty: the request is valid)."""
    if method == "Interpolate":
        problems = endpoint_problems(request.start, "start") | endpoint_problems(request.end, "end")
        if not 2 <= request.steps <= MAX_ROWS:
            problems.add("steps")
        if request.path not in PATHS:
            problems.add("path")
        return problems
    if method == "Variations":
        problems = draws_problems(request, "count")
        if request.HasField("temperature") and not (
            math.isfinite(request.temperature) and 0 <= request.temperature <= MAX_TEMPERATURE
        ):
            problems.add("temperature")
        return problems
    return draws_problems(request, "samples")


def expected_statuses(method: str, request, size: int) -> tuple[set[grpc.StatusCode], set[str]]:
    """The statuses a request of `size` bytes deserves (None: bytes that do not parse), and the
    fields an INVALID_ARGUMENT may name."""
    if size > MAX_MESSAGE_BYTES:
        return {grpc.StatusCode.RESOURCE_EXHAUSTED}, set()
    if request is None:
        return {grpc.StatusCode.INVALID_ARGUMENT}, {"request"}
    if problems := request_problems(method, request):
        return {grpc.StatusCode.INVALID_ARGUMENT}, problems
    return {grpc.StatusCode.OK}, set()


# --- checks of an answer against the model run here ---


def images_in_range(tensor: vae_pb2.Tensor, shape: list[int]) -> np.ndarray:
    """A response's images: `shape`, finite, in [0, 1]; returned as (rows, 784)."""
    assert list(tensor.shape) == shape
    images = array(tensor)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    return images.reshape(-1, 784)


def endpoint_point(endpoint: vae_pb2.Endpoint, model) -> np.ndarray:
    """The latent point a valid endpoint stands for: its latent, or its image's posterior mean."""
    tensor = getattr(endpoint, endpoint.WhichOneof("point"))
    if endpoint.HasField("latent"):
        return array(tensor).reshape(LATENT_DIM)
    pixels = request_pixels(vae_pb2.Tensor(shape=[1, 784], dtype=tensor.dtype, data=tensor.data))
    mean, _ = model.encoder.run(pixels)
    return mean[0]


def documented_posterior(request, model, draws: int) -> tuple[np.ndarray, ...]:
    """Pixels, posterior mean and log-variance of a request's images, and the seeded noise the
    contract documents (VariationsRequest.seed)."""
    pixels = request_pixels(request.images)
    mean, log_variance = model.encoder.run(pixels)
    eps = np.random.default_rng(request.seed).standard_normal(
        (len(pixels), draws, LATENT_DIM), dtype=np.float32
    )
    return pixels, mean, log_variance, eps


def assert_answer(method: str, request, response, model) -> None:
    """A response to a valid request is shaped as the contract says and agrees with the model
    run in this process."""
    assert response.model_version == "1"
    if method == "Interpolate":
        steps = request.steps
        images = images_in_range(response.images, [steps, 28, 28])
        latents = array(response.latents)
        assert latents.shape == (steps, LATENT_DIM)
        first, last = endpoint_point(request.start, model), endpoint_point(request.end, model)
        for endpoint, point, row in ((request.start, first, 0), (request.end, last, -1)):
            if endpoint.HasField("latent"):
                assert latents[row].tobytes() == point.tobytes()
        expected = interpolate_latents(first, last, steps, PATHS[request.path])
        np.testing.assert_allclose(latents, expected, **CLOSE)
        np.testing.assert_allclose(images, model.decoder.run(latents)[0], **CLOSE)
    elif method == "Variations":
        rows, count = request.images.shape[0], request.count
        images = images_in_range(response.images, [rows, count, 28, 28])
        latents = array(response.latents)
        assert latents.shape == (rows, count, LATENT_DIM) and np.isfinite(latents).all()
        np.testing.assert_allclose(
            images, model.decoder.run(latents.reshape(-1, LATENT_DIM))[0], **CLOSE
        )
        temperature = request.temperature if request.HasField("temperature") else 1.0
        if request.HasField("seed") or temperature == 0:
            _, mean, log_variance, eps = documented_posterior(request, model, count)
            expected = posterior_draws(mean, log_variance, eps, temperature)
            np.testing.assert_allclose(latents, expected, **CLOSE)
    else:
        rows = request.images.shape[0]
        assert len(response.elbo) == len(response.log_likelihood) == rows
        assert np.isfinite(response.elbo).all() and np.isfinite(response.log_likelihood).all()
        if request.HasField("seed"):
            pixels, mean, log_variance, eps = documented_posterior(request, model, request.samples)
            draws = posterior_draws(mean, log_variance, eps, 1.0).reshape(-1, LATENT_DIM)
            (decoded,) = model.decoder.run(draws)
            elbo, bound = elbo_and_iwae(
                pixels, mean, log_variance, eps, decoded.reshape(rows, request.samples, -1)
            )
            np.testing.assert_allclose(response.elbo, elbo, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(response.log_likelihood, bound, rtol=1e-3, atol=1e-3)


def call_and_judge(channel, method: str, request, body: bytes, model) -> None:
    """Send `body` (the bytes `request` was parsed from, or None for bytes that do not parse)
    as `method` and judge the outcome."""
    codes, fields = expected_statuses(method, request, len(body))
    event(f"{method} deserves {' or '.join(sorted(code.name for code in codes))}")
    try:
        answer = channel.unary_unary(f"/vae.v1.VAEService/{method}")(body, timeout=CALL_SECONDS)
    except grpc.RpcError as error:
        assert error.code() in codes, (error.code(), error.details(), fields)
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            named = error.details().split(": ", 1)[0]
            assert named in fields, (error.details(), fields)
        return
    assert grpc.StatusCode.OK in codes, f"answered a request that deserves {codes}: {fields}"
    response_type = getattr(vae_pb2, f"{method}Response")
    assert_answer(method, request, response_type.FromString(answer), model)


# --- what the fuzzer sends ---


@st.composite
def endpoint_tensors(draw, form: str, fill, specials, dtype) -> vae_pb2.Tensor:
    """A tensor for one endpoint: mostly one of the shapes the form allows, with or without a
    leading 1; else a batch of rows or anything at all."""
    allowed = ENDPOINT_FORMS[form]
    meant = st.sampled_from([*allowed, *([1, *shape] for shape in allowed)])
    shape = draw(mostly(meant, shapes(allowed)))
    dtype_ = draw(dtype)
    return vae_pb2.Tensor(shape=shape, dtype=dtype_,
                          data=draw(tensor_data(shape, dtype_, fill, specials)))


@st.composite
def well_formed_endpoints(draw) -> vae_pb2.Endpoint:
    """An endpoint a client means: a latent point within the prior's bound, or a digit-like
    image of random pixels, in any shape the contract allows."""
    form = draw(st.sampled_from(sorted(ENDPOINT_FORMS)))
    allowed = ENDPOINT_FORMS[form]
    shape = draw(st.sampled_from([*allowed, *([1, *shape] for shape in allowed)]))
    if form == "latent":
        point = np.array(draw(st.lists(LATENTS, min_size=LATENT_DIM, max_size=LATENT_DIM)),
                         np.float32)
        return vae_pb2.Endpoint(latent=to_proto(point, shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.random(784, np.float32)
    if draw(st.booleans()):
        pixels = (pixels * 255).astype(np.uint8)
    return vae_pb2.Endpoint(image=to_proto(pixels, shape))


ENDPOINTS = mostly(
    well_formed_endpoints(),
    st.one_of(
        endpoint_tensors("latent", LATENTS, LATENT_SPECIALS, mostly(st.just(FLOAT32), dtypes()))
        .map(lambda tensor: vae_pb2.Endpoint(latent=tensor)),
        endpoint_tensors("image", PIXELS, PIXEL_SPECIALS, dtypes())
        .map(lambda tensor: vae_pb2.Endpoint(image=tensor)),
        st.sampled_from([None, vae_pb2.Endpoint()]),
    ),
)
IMAGE_TENSORS = tensors([[784], [28, 28]], PIXELS, PIXEL_SPECIALS)
# Small counts often fit MAX_ROWS with several images; the rest probe the limits.
DRAWS = mostly(st.integers(1, 4) | st.integers(1, MAX_ROWS),
               st.sampled_from([0, MAX_ROWS + 1, 2**32 - 1]))
ABOVE_MAX_TEMPERATURE = float(np.nextafter(np.float32(MAX_TEMPERATURE), np.float32(np.inf)))

REQUESTS = {
    "Interpolate": st.builds(
        with_optional,
        st.just(vae_pb2.InterpolateRequest),
        start=ENDPOINTS,
        end=ENDPOINTS,
        steps=mostly(st.integers(2, MAX_ROWS), st.sampled_from([0, 1, MAX_ROWS + 1, 2**32 - 1])),
        path=mostly(st.sampled_from(sorted(PATHS)), st.integers(-(2**31), 2**31 - 1)),
    ),
    "Variations": st.builds(
        with_optional,
        st.just(vae_pb2.VariationsRequest),
        images=IMAGE_TENSORS,
        count=DRAWS,
        temperature=st.none() | mostly(
            st.floats(0, MAX_TEMPERATURE, width=32),
            st.sampled_from([NAN, INF, -INF, -0.0, -1e-45, -1.0, ABOVE_MAX_TEMPERATURE, 3e38]),
        ),
        seed=SEEDS,
    ),
    "Score": st.builds(with_optional, st.just(vae_pb2.ScoreRequest),
                       images=IMAGE_TENSORS, samples=DRAWS, seed=SEEDS),
}


@st.composite
def interpolate_bodies(draw) -> tuple[vae_pb2.InterpolateRequest, bytes]:
    """An Interpolate request's bytes, sometimes followed by a second start or end endpoint;
    protobuf then merges the two (the later oneof form wins; the same form's tensors merge),
    and the parsed request is what must be judged."""
    body = draw(REQUESTS["Interpolate"]).SerializeToString()
    if draw(st.integers(0, 3)) == 0:
        extra = draw(ENDPOINTS.filter(lambda endpoint: endpoint is not None))
        field = draw(st.sampled_from(["start", "end"]))
        body += vae_pb2.InterpolateRequest(**{field: extra}).SerializeToString()
    return vae_pb2.InterpolateRequest.FromString(body), body


@pytest.mark.parametrize("method", ["Variations", "Score"])
def test_random_requests_get_the_status_they_deserve_and_valid_ones_the_right_answer(
    channel, reference_model, latent_rpcs_unharmed, method
) -> None:
    @FUZZ
    @given(request=REQUESTS[method])
    def fuzz(request) -> None:
        call_and_judge(channel, method, request, request.SerializeToString(), reference_model)

    fuzz()


def test_random_interpolations_and_merged_endpoints_get_the_status_they_deserve(
    channel, reference_model, latent_rpcs_unharmed
) -> None:
    @FUZZ
    @given(parsed_and_body=interpolate_bodies())
    def fuzz(parsed_and_body) -> None:
        request, body = parsed_and_body
        call_and_judge(channel, "Interpolate", request, body, reference_model)

    fuzz()


@FUZZ
@given(method=st.sampled_from(METHODS), body=RAW_BODIES)
def test_raw_bytes_are_parsed_or_refused_as_invalid_argument_never_unknown(
    channel, reference_model, latent_rpcs_unharmed, method, body
) -> None:
    call_and_judge(channel, method, parsed(method, body), body, reference_model)
