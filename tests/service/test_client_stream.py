"""VAEClient.sample_stream against real servers: numpy chunks, and a stream that survives the
SIGTERM of the replica serving it.

The client's channel knows two replicas (one target naming both addresses, as a load balancer
would offer them). When the first drains, its stream ends with UNAVAILABLE; the client opens it
again on the other at the first row it lacks, with the seed the server reported, and the caller
sees the same bytes as from a stream that was never interrupted.
"""

import signal

import grpc
import numpy as np
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.config import Config
from tests.model_versions import change_decoder, copy_version
from vae_client import ModelVersionChanged, StreamChunk, VAEClient
from vae_client._stream import StreamRequest, resumed_stream

pytestmark = pytest.mark.timeout(180)

STREAM = {"grpc_type": "server_stream", "grpc_method": "SampleStream"}
# 100 chunks of 256 float32 images (80 MB): more than the flow-control window lets the first
# replica make ahead while the test holds the reader, so it is still streaming at the SIGTERM.
COUNT, CHUNK_ROWS = 25_600, 256


def two_replicas(first, second) -> str:
    """A target naming both servers' addresses; gRPC connects to the first that answers."""
    return f"ipv4:{first.target},{second.target}"


def read_through_a_sigterm(client: VAEClient, replica, **stream_args) -> list[StreamChunk]:
    """All chunks of a stream whose replica gets SIGTERM after the first three."""
    stream = client.sample_stream(COUNT, chunk_rows=CHUNK_ROWS, **stream_args)
    chunks = [next(stream) for _ in range(3)]
    replica.signal(signal.SIGTERM)
    replica.wait_for_log("draining", timeout=10)
    chunks += list(stream)
    assert replica.wait_exit() == 0
    messages = [record["message"] for record in replica.records()]
    assert messages.index("draining") < messages.index("stopped")
    return chunks


def joined(chunks: list[StreamChunk], field: str) -> np.ndarray:
    return np.concatenate([getattr(chunk, field) for chunk in chunks])


def test_chunks_come_as_numpy_arrays_with_their_position_version_and_seed(
    vae_server, model_manifest
) -> None:
    with VAEClient(vae_server.target) as client:
        chunks = list(client.sample_stream(
            1100, seed=3, start_index=50, chunk_rows=500, return_latents=True,
            output_dtype="uint8",
        ))
        info = client.info()
    assert [(c.start_index, c.images.shape, c.latents.shape) for c in chunks] == [
        (50, (500, 28, 28), (500, 2)), (550, (500, 28, 28), (500, 2)), (1050, (50, 28, 28), (50, 2))
    ]
    assert {(c.images.dtype, c.model_version, c.seed) for c in chunks} == {
        (np.dtype(np.uint8), model_manifest["version"], 3)
    }
    assert (info.max_stream_rows, info.max_chunk_rows) == (
        Config().max_stream_rows, Config().max_chunk_rows
    )


def test_a_bad_request_is_raised_at_once_not_retried(vae_server) -> None:
    with VAEClient(vae_server.target) as client, pytest.raises(grpc.RpcError) as raised:
        next(client.sample_stream(10, start_index=10))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("start_index: ")
    with pytest.raises(ValueError, match="output_dtype"):
        VAEClient(vae_server.target).sample_stream(10, output_dtype="float16")  # type: ignore[arg-type]


def test_stopping_early_cancels_the_servers_stream(vae_server) -> None:
    cancelled = vae_server.metric("grpc_server_handled_total", grpc_code="Canceled", **STREAM)
    with VAEClient(vae_server.target) as client:
        stream = client.sample_stream(10**8, seed=1)
        next(stream)
        stream.close()
    vae_server.wait_for_metric(
        "grpc_server_handled_total", cancelled + 1, grpc_code="Canceled", **STREAM
    )


def test_a_stream_resumed_on_another_replica_is_bitwise_the_uninterrupted_one(
    start_vae_server,
) -> None:
    first, second = start_vae_server(), start_vae_server()
    with VAEClient(two_replicas(first, second)) as client:
        chunks = read_through_a_sigterm(
            client, first, temperature=0.8, return_latents=True
        )
    # The rest came from the second replica, in one resumed call.
    assert second.metric("grpc_server_started_total", **STREAM) == 1
    (seed,) = {chunk.seed for chunk in chunks}
    assert [chunk.start_index for chunk in chunks] == list(range(0, COUNT, CHUNK_ROWS))
    with VAEClient(second.target) as client:
        reference = list(client.sample_stream(
            COUNT, seed=seed, temperature=0.8, return_latents=True, chunk_rows=CHUNK_ROWS
        ))
    for field in ("images", "latents"):
        np.testing.assert_array_equal(joined(chunks, field), joined(reference, field))


def test_a_stream_resumed_on_another_model_version_is_refused(
    start_vae_server, model_dir, tmp_path
) -> None:
    root = tmp_path / "models"
    change_decoder(copy_version(model_dir, root, "2"))
    first, second = start_vae_server(), start_vae_server(VAE_MODEL_DIR=str(root))
    with VAEClient(two_replicas(first, second)) as client, pytest.raises(
        ModelVersionChanged
    ) as raised:
        read_through_a_sigterm(client, first, seed=9)
    assert (raised.value.first_version, raised.value.new_version, raised.value.seed) == (
        "1", "2", 9
    )
    assert raised.value.next_index > 0 and raised.value.next_index % CHUNK_ROWS == 0


def test_resuming_gives_up_after_the_attempts_allowed(vae_server) -> None:
    waits: list[float] = []
    nobody = "127.0.0.1:1"  # no server listens on port 1
    with grpc.insecure_channel(nobody) as channel, pytest.raises(grpc.RpcError) as raised:
        list(resumed_stream(
            vae_pb2_grpc.VAEServiceStub(channel),
            StreamRequest(10, None, vae_pb2.FLOAT32, 0, False),
            0, None, resume_attempts=3, timeout_seconds=10, sleep=waits.append,
        ))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert waits == [0.25, 0.5, 1.0]
