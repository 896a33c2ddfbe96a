"""Bad requests get INVALID_ARGUMENT with a message naming the field, and harm nobody else.

Explicit cases first: each kind of bad input to each RPC, and the messages' wording. Then every
RPC fuzzed with random and malformed requests, each judged by an oracle written from the
contract (vae.proto, issue 4): a valid request must be answered, and answered right (compared
with the model run in this process); an invalid one refused with INVALID_ARGUMENT naming a field
that is wrong; one above the message size limit refused with RESOURCE_EXHAUSTED. Meanwhile
seeded well-formed requests keep getting their reference answers, and afterwards the server is
still up, SERVING, has logged no warning or error, and its memory has stayed bounded.

All of it runs on one server with small limits, so that oversized messages stay cheap to make.
"""

import math

import grpc
import numpy as np
import psutil
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.model import load_model, newest_version_dir
from service.validation import MAX_ABS_LATENT, MAX_TEMPERATURE
from tests.traffic import CHANNEL_OPTIONS, Traffic, seeded_requests

pytestmark = pytest.mark.timeout(240)

FLOAT32, UINT8 = vae_pb2.FLOAT32, vae_pb2.UINT8
MAX_ROWS = 16
# The smallest limit the server accepts for MAX_ROWS images, rounded up.
MAX_MESSAGE_BYTES = 64 * 1024
RSS_GROWTH_LIMIT_MIB = 64
# Latents are fuzzed up to the server's bound and, through LATENT_SPECIALS, far beyond it.
MAGNITUDE_LIMIT = MAX_ABS_LATENT
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
CALL_SECONDS = 20


@pytest.fixture(scope="module")
def server(start_vae_server):
    return start_vae_server(
        VAE_MAX_REQUEST_ROWS=str(MAX_ROWS), VAE_MAX_CHUNK_ROWS=str(MAX_ROWS),
        VAE_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
    )


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return vae_pb2_grpc.VAEServiceStub(channel)


# --- explicit cases ---


def tensor(shape, dtype=FLOAT32, data=None, fill=0.5) -> vae_pb2.Tensor:
    """A Tensor whose data matches its shape unless `data` is given."""
    if data is None:
        numpy_dtype = np.float32 if dtype == FLOAT32 else np.uint8
        data = np.full(int(np.prod(shape)), fill, dtype=numpy_dtype).tobytes()
    return vae_pb2.Tensor(shape=shape, dtype=dtype, data=data)


def image_tensor_cases():
    """(id, images Tensor, field the message must start with)."""
    return [
        ("images missing", vae_pb2.Tensor(), "images.shape"),
        ("one dimension", tensor([784]), "images.shape"),
        ("wrong width", tensor([3, 5]), "images.shape"),
        ("wrong square", tensor([2, 28, 27]), "images.shape"),
        ("four dimensions", tensor([1, 1, 28, 28]), "images.shape"),
        ("no rows", tensor([0, 784]), "images.shape[0]"),
        ("negative rows", tensor([-1, 784], data=b""), "images.shape[0]"),
        ("too many rows", tensor([MAX_ROWS + 1, 784], data=b""), "images.shape[0]"),
        ("dtype unspecified", tensor([1, 784], dtype=0, data=bytes(784 * 4)), "images.dtype"),
        ("unknown dtype", tensor([1, 784], dtype=7, data=bytes(784 * 4)), "images.dtype"),
        ("data too short", tensor([2, 784], data=bytes(784 * 4)), "images.data"),
        ("data too long", tensor([1, 784], UINT8, data=bytes(785)), "images.data"),
        ("uint8 sized as float", tensor([1, 784], UINT8, data=bytes(784 * 4)), "images.data"),
        ("NaN", tensor([1, 784], fill=np.nan), "images.data"),
        ("infinity", tensor([2, 28, 28], fill=np.inf), "images.data"),
        ("above one", tensor([1, 784], fill=1.5), "images.data"),
        ("below zero", tensor([1, 784], fill=-0.01), "images.data"),
    ]


def bad_requests():
    """(id, method, request, field) for every RPC that takes input."""
    cases = [
        ("Sample count 0", "Sample", vae_pb2.SampleRequest(count=0), "count"),
        ("Sample count above max", "Sample", vae_pb2.SampleRequest(count=MAX_ROWS + 1), "count"),
        ("Sample temperature 0", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=0), "temperature"),
        ("Sample temperature negative", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=-1), "temperature"),
        ("Sample temperature NaN", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=float("nan")), "temperature"),
        ("Sample temperature infinite", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=float("inf")), "temperature"),
        ("Sample temperature above 100", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=101), "temperature"),
        ("Sample temperature near float32's limit", "Sample",
         vae_pb2.SampleRequest(count=2, seed=1, temperature=3e38), "temperature"),
        ("Decode latents missing", "Decode", vae_pb2.DecodeRequest(), "latents.shape"),
        ("Decode wrong latent dim", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([2, 3])), "latents.shape"),
        ("Decode three dimensions", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2, 1])), "latents.shape"),
        ("Decode no rows", "Decode", vae_pb2.DecodeRequest(latents=tensor([0, 2])),
         "latents.shape[0]"),
        ("Decode uint8", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], UINT8)), "latents.dtype"),
        ("Decode data mismatch", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], data=bytes(4))), "latents.data"),
        ("Decode NaN", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([3, 2], fill=np.nan)), "latents.data"),
        ("Decode infinity", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], fill=-np.inf)), "latents.data"),
        ("Decode latents beyond 1e4", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], fill=-2e4)), "latents.data"),
        ("Decode latents near float32's limit", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], fill=3e38)), "latents.data"),
    ]
    for name, images, field in image_tensor_cases():
        cases.append((f"Encode {name}", "Encode", vae_pb2.EncodeRequest(images=images), field))
        cases.append((f"Reconstruct {name}", "Reconstruct",
                      vae_pb2.ReconstructRequest(images=images, seed=1), field))
    return cases


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [pytest.param(m, r, f, id=i) for i, m, r, f in bad_requests()],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub, method, request_message, field
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request_message, timeout=CALL_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: "), raised.value.details()


def test_the_messages_say_what_was_expected_and_what_came(stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Encode(vae_pb2.EncodeRequest(images=tensor([3, 5])), timeout=CALL_SECONDS)
    assert raised.value.details() == (
        "images.shape: must be (N, 784) or (N, 28, 28), got (3, 5)"
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Sample(vae_pb2.SampleRequest(count=0), timeout=CALL_SECONDS)
    assert raised.value.details() == f"count: must be between 1 and {MAX_ROWS}, got 0"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Decode(vae_pb2.DecodeRequest(latents=tensor([1, 2], data=bytes(4))),
                    timeout=CALL_SECONDS)
    assert raised.value.details() == (
        "latents.data: has 4 bytes, but shape (1, 2) of FLOAT32 needs 8"
    )


def test_a_message_above_the_size_limit_is_resource_exhausted(stub) -> None:
    too_big = tensor([MAX_ROWS, 784], UINT8, data=bytes(MAX_MESSAGE_BYTES + 1))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Encode(vae_pb2.EncodeRequest(images=too_big), timeout=CALL_SECONDS)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_unknown_method_is_unimplemented(channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/vae.v1.VAEService/Train")(b"", timeout=CALL_SECONDS)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- random requests, with well-formed ones beside them ---


@pytest.fixture(scope="module")
def reference_model(model_dir):
    return load_model(newest_version_dir(model_dir), 1)


@pytest.fixture
def unharmed(server, heldout):
    """Seeded well-formed requests run during the test; afterwards the server must be unharmed:
    every such request answered as before, still SERVING, nothing logged above INFO, memory
    grown by less than RSS_GROWTH_LIMIT_MIB."""
    process = psutil.Process(server.process.pid)
    with Traffic(server.target, seeded_requests(heldout), callers=2) as traffic:
        traffic.wait_answered(1)
        rss_before = process.memory_info().rss
        lines_before = len(server.lines)
        yield
        traffic.wait_answered(1)
    traffic.assert_clean()
    assert server.process.poll() is None
    assert server.health() == "SERVING"
    loud = [line for line in server.lines[lines_before:] if '"level": "INFO"' not in line]
    assert loud == []
    growth_mib = (process.memory_info().rss - rss_before) / 2**20
    assert growth_mib < RSS_GROWTH_LIMIT_MIB


# --- the oracle: what the contract says each request deserves ---


def tensor_problems(
    tensor: vae_pb2.Tensor, field: str, trailing: list[list[int]], dtypes: dict[int, int],
    in_range,
) -> set[str]:
    """The fields of `tensor` that break the contract, by the names the server must use."""
    shape = list(tensor.shape)
    problems = set()
    if shape[1:] not in trailing:
        problems.add(f"{field}.shape")
    if shape and not 1 <= shape[0] <= MAX_ROWS:
        problems.add(f"{field}.shape[0]")
    if tensor.dtype not in dtypes:
        problems.add(f"{field}.dtype")
    elif len(tensor.data) != math.prod(shape) * dtypes[tensor.dtype]:
        problems.add(f"{field}.data")
    elif not problems and tensor.dtype == FLOAT32:
        values = np.frombuffer(tensor.data, "<f4")
        if not (np.isfinite(values).all() and in_range(values)):
            problems.add(f"{field}.data")
    return problems


def image_problems(tensor: vae_pb2.Tensor) -> set[str]:
    return tensor_problems(
        tensor, "images", [[784], [28, 28]], {FLOAT32: 4, UINT8: 1},
        lambda v: v.size == 0 or (v.min() >= 0 and v.max() <= 1),
    )


def request_problems(method: str, request) -> set[str]:
    """Which fields of a parsed request are wrong (empty: the request is valid)."""
    if method == "Sample":
        problems = set()
        if not 1 <= request.count <= MAX_ROWS:
            problems.add("count")
        if request.HasField("temperature") and not (
            math.isfinite(request.temperature) and 0 < request.temperature <= MAX_TEMPERATURE
        ):
            problems.add("temperature")
        return problems
    if method in ("Encode", "Reconstruct"):
        return image_problems(request.images)
    if method == "Decode":
        return tensor_problems(
            request.latents, "latents", [[2]], {FLOAT32: 4},
            lambda v: v.size == 0 or np.abs(v).max() <= MAX_ABS_LATENT,
        )
    return set()


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


def array(tensor: vae_pb2.Tensor) -> np.ndarray:
    assert tensor.dtype == FLOAT32
    return np.frombuffer(tensor.data, "<f4").reshape(list(tensor.shape))


def assert_images(tensor: vae_pb2.Tensor, shape: list[int]) -> np.ndarray:
    images = array(tensor)
    assert list(tensor.shape) == shape
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    return images.reshape(shape[0], 784)


def request_pixels(tensor: vae_pb2.Tensor) -> np.ndarray:
    if tensor.dtype == UINT8:
        return np.frombuffer(tensor.data, np.uint8).reshape(tensor.shape[0], 784) / np.float32(255)
    return np.frombuffer(tensor.data, "<f4").reshape(tensor.shape[0], 784)


def assert_answer(method: str, request, response, model) -> None:
    """A response to a valid request is shaped as the contract says and agrees with the
    model run in this process."""
    close = {"rtol": 1e-4, "atol": 1e-5}
    if method != "GetModelInfo":
        assert response.model_version == "1"
    if method == "Sample":
        images = assert_images(response.images, [request.count, 28, 28])
        if request.return_latents:
            (expected,) = model.decoder.run(array(response.latents).astype(np.float32))
            np.testing.assert_allclose(images, expected, **close)
        else:
            assert not response.HasField("latents")
    elif method == "Encode":
        mean, log_variance = model.encoder.run(request_pixels(request.images))
        np.testing.assert_allclose(array(response.mean), mean, **close)
        np.testing.assert_allclose(array(response.log_variance), log_variance, **close)
        assert response.HasField("latents") == request.HasField("seed")
    elif method == "Reconstruct":
        images = assert_images(response.images, list(request.images.shape))
        errors = np.array(response.reconstruction_error)
        assert len(errors) == request.images.shape[0]
        assert np.isfinite(errors).all() and (errors >= 0).all()
        if not request.HasField("seed"):
            mean, _ = model.encoder.run(request_pixels(request.images))
            (expected,) = model.decoder.run(mean)
            np.testing.assert_allclose(images, expected, rtol=1e-3, atol=1e-4)
    elif method == "Decode":
        images = assert_images(response.images, [request.latents.shape[0], 28, 28])
        (expected,) = model.decoder.run(array(request.latents))
        np.testing.assert_allclose(images, expected, **close)
    else:
        assert (response.name, response.version, response.max_request_rows) == (
            "vae-mnist", "1", MAX_ROWS
        )


def call_and_judge(channel, method: str, request, body: bytes, model) -> None:
    """Send `body` (the request's bytes, or garbage that parses as `request`) as `method`."""
    call = channel.unary_unary(f"/vae.v1.VAEService/{method}")
    codes, fields = expected_statuses(method, request, len(body))
    event(f"{method} deserves {' or '.join(sorted(code.name for code in codes))}")
    try:
        answer = call(body, timeout=CALL_SECONDS)
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

NAN, INF = float("nan"), float("inf")
PIXEL_SPECIALS = [NAN, INF, -INF, -0.0, 1.0000001, -1e-30, 1.5, 255.0, 3.4e38, -3.4e38, 1e-45]
LATENT_SPECIALS = [NAN, INF, -INF, -0.0, MAGNITUDE_LIMIT, -MAGNITUDE_LIMIT, 1e-45, 3.4e38,
                   -3.4e38]
HUGE_DIMS = [2**31, 2**32 + 1, 2**63 - 1, -(2**63), -1]
SEEDS = st.none() | st.integers(0, 2**64 - 1)


def mostly(usual, unusual):
    """`usual` four times in five, else `unusual` (`one_of` would pick each half the time)."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda is_usual: usual if is_usual else unusual
    )


def dtypes():
    return mostly(
        st.sampled_from([FLOAT32, FLOAT32, UINT8]),
        st.sampled_from([vae_pb2.DTYPE_UNSPECIFIED]) | st.integers(-(2**31), 2**31 - 1),
    )


def shapes(trailing: list[list[int]]):
    """Mostly shapes a client could mean, some with bad row counts; and anything at all."""
    rows = mostly(st.integers(1, MAX_ROWS),
                  st.sampled_from([0, -1, -2, MAX_ROWS + 1, *HUGE_DIMS]))
    meant = st.tuples(rows, st.sampled_from(trailing)).map(lambda rt: [rt[0], *rt[1]])
    anything = st.lists(st.sampled_from([0, 1, 2, 28, 784, *HUGE_DIMS]), max_size=4)
    return mostly(meant, anything)


@st.composite
def tensor_data(draw, shape: list[int], dtype: int, fill, specials) -> bytes:
    """Bytes for a tensor: usually as many as the shape needs, one fill value with a few
    special values written over it; sometimes a few bytes off, random, or oversized."""
    count = math.prod(shape) if all(d >= 0 for d in shape) else -1
    uint8 = dtype == UINT8
    itemsize = 1 if uint8 else 4
    kind = draw(st.sampled_from(["fits"] * 6 + ["off by some", "random", "oversized"]))
    if kind == "random" or not 0 <= count * itemsize <= MAX_MESSAGE_BYTES:
        return draw(st.binary(max_size=64))
    if kind == "oversized":
        return bytes(MAX_MESSAGE_BYTES + draw(st.integers(1, 4096)))
    if uint8:
        values = np.full(count, draw(st.integers(0, 255)), np.uint8)
    else:
        values = np.full(count, draw(fill), np.float32)
        for index, value in draw(st.lists(
            st.tuples(st.integers(0, max(count - 1, 0)), st.sampled_from(specials)), max_size=3
        )):
            if count:
                values[index] = value
    data = values.tobytes()
    if kind == "off by some":
        cut = draw(st.integers(-min(len(data), 8), 8).filter(lambda n: n != 0))
        data = data[:cut] if cut < 0 else data + bytes(cut)
    return data


@st.composite
def tensors(draw, trailing: list[list[int]], fill, specials) -> vae_pb2.Tensor | None:
    """A Tensor to put in a request, or None to leave the field unset."""
    if draw(st.integers(0, 19)) == 0:
        return None
    shape = draw(shapes(trailing))
    dtype = draw(dtypes())
    return vae_pb2.Tensor(shape=shape, dtype=dtype,
                          data=draw(tensor_data(shape, dtype, fill, specials)))


PIXELS = st.floats(0, 1, width=32)
LATENTS = st.floats(-MAGNITUDE_LIMIT, MAGNITUDE_LIMIT, width=32)
IMAGE_TENSORS = tensors([[784], [28, 28]], PIXELS, PIXEL_SPECIALS)
LATENT_TENSORS = tensors([[2]], LATENTS, LATENT_SPECIALS)


def with_optional(message_type, **values):
    """A request with the fields that are not None."""
    return message_type(**{k: v for k, v in values.items() if v is not None})


REQUESTS = {
    "Sample": st.builds(
        with_optional,
        st.just(vae_pb2.SampleRequest),
        count=mostly(st.integers(1, MAX_ROWS), st.sampled_from([0, MAX_ROWS + 1, 2**32 - 1])),
        seed=SEEDS,
        temperature=st.none()
        | mostly(
            st.floats(0, MAGNITUDE_LIMIT, width=32, exclude_min=True),
            st.sampled_from([NAN, INF, -INF, 0.0, -0.0, -1.0, -MAGNITUDE_LIMIT]),
        ),
        return_latents=st.booleans(),
    ),
    "Encode": st.builds(with_optional, st.just(vae_pb2.EncodeRequest),
                        images=IMAGE_TENSORS, seed=SEEDS),
    "Reconstruct": st.builds(with_optional, st.just(vae_pb2.ReconstructRequest),
                             images=IMAGE_TENSORS, seed=SEEDS),
    "Decode": st.builds(with_optional, st.just(vae_pb2.DecodeRequest), latents=LATENT_TENSORS),
}


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_random_requests_get_the_status_they_deserve_and_valid_ones_the_right_answer(
    channel, reference_model, unharmed, method
) -> None:
    @FUZZ
    @given(request=REQUESTS[method])
    def fuzz(request) -> None:
        call_and_judge(channel, method, request, request.SerializeToString(), reference_model)

    fuzz()


METHODS = ["Sample", "Encode", "Reconstruct", "Decode", "GetModelInfo"]
# Request bodies of random bytes, now and then one just above the message size limit.
RAW_BODIES = mostly(
    st.binary(max_size=200),
    st.integers(1, 4096).map(lambda n: bytes([0x1A]) * (MAX_MESSAGE_BYTES + n)),
)


def parsed(method: str, body: bytes) -> Message | None:
    """`body` as `method`'s request, as the server would parse it; None if it does not parse."""
    try:
        return getattr(vae_pb2, f"{method}Request").FromString(body)
    except DecodeError:
        return None


@FUZZ
@given(method=st.sampled_from(METHODS), body=RAW_BODIES)
def test_raw_bytes_are_parsed_or_refused_as_invalid_argument_never_unknown(
    channel, reference_model, unharmed, method, body
) -> None:
    call_and_judge(channel, method, parsed(method, body), body, reference_model)
