"""bench.streams: SampleStream calls kept running beside a measurement, against a real server."""

import grpc
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from bench.streams import streams_running

pytestmark = pytest.mark.timeout(120)


def test_unary_calls_are_answered_while_the_streams_flow(vae_server) -> None:
    with streams_running(vae_server.target, 2) as streams:
        # Each stream has sent a chunk before the block starts, and is read on meanwhile.
        with grpc.insecure_channel(vae_server.target) as channel:
            stub = vae_pb2_grpc.VAEServiceStub(channel)
            response = stub.Sample(vae_pb2.SampleRequest(count=1), timeout=30)
        assert list(response.images.shape) == [1, 28, 28]
    assert streams.streams == 2
    assert streams.rows_per_s >= 0


def test_a_stream_the_server_refuses_fails_the_measurement(start_vae_server) -> None:
    # The background streams ask for chunks of 1,024 rows; this server sends 512 at most.
    server = start_vae_server(VAE_MAX_CHUNK_ROWS="512")
    with (
        pytest.raises(RuntimeError, match="INVALID_ARGUMENT: chunk_rows"),
        streams_running(server.target, 2),
    ):
        pytest.fail("the block ran without its streams")


def test_no_streams_run_nothing_beside_the_block(vae_server) -> None:
    with streams_running(vae_server.target, 0) as streams:
        pass
    assert (streams.streams, streams.rows_per_s) == (0, 0.0)
