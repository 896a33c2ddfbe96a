"""SampleStream end to end: a dataset of synthetic digits, chunk by chunk, on a real server.

Row i is a pure function of (model version, seed, temperature, i): the same whatever the chunk
size and start index, its latent the documented NumPy recipe and its image Decode of that
latent. Bad requests are INVALID_ARGUMENT naming the field; the calls are counted as
server_stream RPCs; reflection describes the method.
"""

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.config import Config
from tests.traffic import CHANNEL_OPTIONS

pytestmark = pytest.mark.timeout(120)

LATENT_DIM = 2
BLOCK_ROWS = 1024
CALL_SECONDS = 60


@pytest.fixture(scope="module")
def stub(vae_server):
    with grpc.insecure_channel(vae_server.target, options=CHANNEL_OPTIONS) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


def recipe_latents(seed: int, rows: range, temperature: float = 1.0) -> np.ndarray:
    """vae.proto's definition, row by row: block i // 1024 of the seed's generator, row
    i % 1024, times the temperature in float32."""
    blocks: dict[int, np.ndarray] = {}
    out = []
    for i in rows:
        block = blocks.get(i // BLOCK_ROWS)
        if block is None:
            block = blocks[i // BLOCK_ROWS] = np.random.default_rng(
                [seed, i // BLOCK_ROWS]
            ).standard_normal((BLOCK_ROWS, LATENT_DIM), dtype=np.float32)
        out.append(block[i % BLOCK_ROWS] * np.float32(temperature))
    return np.stack(out)


def array(tensor: vae_pb2.Tensor) -> np.ndarray:
    dtype = np.float32 if tensor.dtype == vae_pb2.FLOAT32 else np.uint8
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)


def stream(stub, **fields) -> list[vae_pb2.SampleChunk]:
    return list(stub.SampleStream(vae_pb2.SampleStreamRequest(**fields), timeout=CALL_SECONDS))


def rows_of(chunks: list[vae_pb2.SampleChunk], field: str) -> np.ndarray:
    return np.concatenate([array(getattr(chunk, field)) for chunk in chunks])


def test_chunks_cover_start_index_to_count_in_order_with_version_and_seed(
    stub, model_manifest
) -> None:
    chunks = stream(stub, count=2500, seed=4, start_index=100, chunk_rows=1000)
    assert [chunk.start_index for chunk in chunks] == [100, 1100, 2100]
    assert [list(chunk.images.shape) for chunk in chunks] == [
        [1000, 28, 28], [1000, 28, 28], [400, 28, 28]
    ]
    assert {(chunk.model_version, chunk.seed) for chunk in chunks} == {
        (model_manifest["version"], 4)
    }
    assert not any(chunk.HasField("latents") for chunk in chunks)
    images = rows_of(chunks, "images")
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1


def test_unset_chunk_rows_means_max_chunk_rows(stub) -> None:
    chunks = stream(stub, count=Config().max_chunk_rows + 1, seed=1)
    assert [len(array(chunk.images)) for chunk in chunks] == [Config().max_chunk_rows, 1]


def test_latents_are_the_documented_recipe_and_images_decode_them(stub) -> None:
    # Crosses the block boundaries at rows 1024 and 2048.
    chunks = stream(stub, count=2100, seed=11, temperature=0.7, start_index=1000,
                    chunk_rows=300, return_latents=True)
    latents = rows_of(chunks, "latents")
    np.testing.assert_array_equal(latents, recipe_latents(11, range(1000, 2100), 0.7))
    decoded = stub.Decode(vae_pb2.DecodeRequest(latents=vae_pb2.Tensor(
        shape=latents.shape, dtype=vae_pb2.FLOAT32, data=latents.tobytes(),
    )), timeout=CALL_SECONDS)
    np.testing.assert_array_equal(rows_of(chunks, "images"), array(decoded.images))


@pytest.mark.parametrize(("start_index", "chunk_rows"), [(0, 1024), (0, 7), (1500, 1), (2047, 64)])
def test_each_row_is_the_same_whatever_the_chunks_and_the_start(
    stub, start_index, chunk_rows
) -> None:
    count = 2100 if chunk_rows > 1 else 1530
    whole = stream(stub, count=count, seed=5, temperature=1.5, return_latents=True)
    part = stream(stub, count=count, seed=5, temperature=1.5, return_latents=True,
                  start_index=start_index, chunk_rows=chunk_rows)
    for field in ("latents", "images"):
        np.testing.assert_array_equal(rows_of(part, field), rows_of(whole, field)[start_index:])


def test_uint8_images_are_the_float32_images_quantized(stub) -> None:
    floats = rows_of(stream(stub, count=600, seed=2, chunk_rows=256), "images")
    chunks = stream(stub, count=600, seed=2, chunk_rows=256, output_dtype=vae_pb2.UINT8)
    assert {chunk.images.dtype for chunk in chunks} == {vae_pb2.UINT8}
    np.testing.assert_array_equal(
        rows_of(chunks, "images"), np.rint(floats * np.float32(255)).astype(np.uint8)
    )


def test_an_unseeded_stream_reports_the_seed_it_drew_and_that_seed_repeats_it(stub) -> None:
    first = stream(stub, count=300, chunk_rows=100, return_latents=True)
    second = stream(stub, count=300, chunk_rows=100, return_latents=True)
    (seed,) = {chunk.seed for chunk in first}
    assert {chunk.seed for chunk in second} != {seed}
    repeated = stream(stub, count=300, seed=seed, start_index=150, return_latents=True)
    np.testing.assert_array_equal(rows_of(repeated, "latents"), rows_of(first, "latents")[150:])


def test_the_trailer_names_the_row_after_the_last_one_sent(stub) -> None:
    call = stub.SampleStream(
        vae_pb2.SampleStreamRequest(count=50, seed=1, start_index=10, chunk_rows=16),
        timeout=CALL_SECONDS,
    )
    assert [chunk.start_index for chunk in call] == [10, 26, 42]
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata()) == {"vae-next-index": "50"}


def test_get_model_info_reports_the_stream_limits(stub) -> None:
    info = stub.GetModelInfo(vae_pb2.GetModelInfoRequest(), timeout=CALL_SECONDS)
    assert (info.max_stream_rows, info.max_chunk_rows) == (
        Config().max_stream_rows, Config().max_chunk_rows
    )
    assert info.max_stream_rows >= 10**8


def bad_streams():
    """(id, request, field the message must start with)."""
    most, chunk = Config().max_stream_rows, Config().max_chunk_rows
    request = vae_pb2.SampleStreamRequest
    return [
        ("count 0", request(), "count"),
        ("count above max", request(count=most + 1), "count"),
        ("start at count", request(count=10, start_index=10), "start_index"),
        ("start past count", request(count=10, start_index=2**63), "start_index"),
        ("chunk above max", request(count=10, chunk_rows=chunk + 1), "chunk_rows"),
        ("unknown output dtype", request(count=10, output_dtype=7), "output_dtype"),
        ("temperature 0", request(count=10, temperature=0), "temperature"),
        ("temperature NaN", request(count=10, temperature=float("nan")), "temperature"),
        ("temperature above 100", request(count=10, temperature=101), "temperature"),
    ]


@pytest.mark.parametrize(
    ("request_message", "field"), [pytest.param(r, f, id=i) for i, r, f in bad_streams()]
)
def test_bad_input_is_invalid_argument_naming_the_field(stub, request_message, field) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.SampleStream(request_message, timeout=CALL_SECONDS))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: "), raised.value.details()


def test_streams_are_counted_as_server_stream_rpcs(vae_server, stub) -> None:
    labels = {"grpc_type": "server_stream", "grpc_service": "vae.v1.VAEService",
              "grpc_method": "SampleStream"}
    before = {
        name: vae_server.metric(name, **labels)
        for name in ("grpc_server_started_total", "grpc_server_handling_seconds_count")
    }
    ok = vae_server.metric("grpc_server_handled_total", grpc_code="OK", **labels)
    bad = vae_server.metric("grpc_server_handled_total", grpc_code="InvalidArgument", **labels)
    stream(stub, count=3, seed=1, chunk_rows=1)
    with pytest.raises(grpc.RpcError):
        stream(stub, count=0)
    assert vae_server.metric("grpc_server_started_total", **labels) == (
        before["grpc_server_started_total"] + 2
    )
    assert vae_server.metric("grpc_server_handling_seconds_count", **labels) == (
        before["grpc_server_handling_seconds_count"] + 2
    )
    assert vae_server.metric("grpc_server_handled_total", grpc_code="OK", **labels) == ok + 1
    assert vae_server.metric(
        "grpc_server_handled_total", grpc_code="InvalidArgument", **labels
    ) == bad + 1
    # Unary calls keep their own type.
    stub.Sample(vae_pb2.SampleRequest(count=1), timeout=CALL_SECONDS)
    assert vae_server.metric(
        "grpc_server_started_total", grpc_type="unary", grpc_method="Sample"
    ) >= 1


def test_reflection_describes_the_stream(vae_server) -> None:
    with grpc.insecure_channel(vae_server.target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindMethodByName("vae.v1.VAEService.SampleStream")
        assert (method.client_streaming, method.server_streaming) == (False, True)
        assert method.output_type.full_name == "vae.v1.SampleChunk"


def test_a_body_that_is_not_a_request_is_invalid_argument(vae_server) -> None:
    with grpc.insecure_channel(vae_server.target) as channel, pytest.raises(
        grpc.RpcError
    ) as raised:
        list(channel.unary_stream("/vae.v1.VAEService/SampleStream")(
            b"\xff\xff\xff", timeout=CALL_SECONDS
        ))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "request: the body is not a valid vae.v1.SampleStreamRequest message"
    )
