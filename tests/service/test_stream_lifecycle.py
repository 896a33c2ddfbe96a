"""A SampleStream's life on the server: how far it runs ahead, how it ends, what a roll-out does.

- Back-pressure: gRPC asks the stream for its next chunk only once the last one is sent, and a
  send waits while the transport's flow-control window is full, so a reader that stalls holds
  the server to a lead of a few megabytes: no rows are made for it meanwhile, and the server's
  memory stays flat.
- A stream whose caller cancels, or whose deadline passes, stops within the chunk it was
  making (counted by the decoder's rows run: vae_batch_size_sum).
- On SIGTERM a running stream ends with UNAVAILABLE and the trailer "vae-next-index" naming the
  first row it did not send, and the server exits within the grace period.
- A model roll-out does not change a running stream's version: it finishes on the model it
  started with, while new calls get the new one.
- At most VAE_MAX_STREAMS run at once: one more gets RESOURCE_EXHAUSTED while unary calls are
  still answered, and a stream that ends frees its place.
"""

import signal
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.model import load_model
from tests.model_versions import change_decoder, copy_version, publish
from tests.traffic import CHANNEL_OPTIONS

pytestmark = pytest.mark.timeout(180)

STREAM = {"grpc_type": "server_stream", "grpc_method": "SampleStream"}
FLOAT32_ROW_BYTES = 28 * 28 * 4
# A dataset far larger than any test reads: an unbounded server would make rows for it on.
ENDLESS = 10**8
PAUSE_SECONDS = 10.0
# What a stalled reader may hold the server to: what the transport holds (the reader's
# flow-control window, which grpcio grows to fit the link, and the sockets' buffers: 6 to
# 20 MiB seen on loopback) and the chunk being made. Unbounded, it would be gigabytes.
LEAD_LIMIT_BYTES = 64 * 1024 * 1024
RSS_GROWTH_LIMIT_BYTES = 64 * 1024 * 1024
# The slow server runs one row per onnxruntime call: a chunk of this many rows takes long
# enough that a cancel or a deadline lands in the middle of one.
SLOW_CHUNK_ROWS = 4096


def open_stub(server) -> tuple[grpc.Channel, vae_pb2_grpc.VAEServiceStub]:
    channel = grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS)
    return channel, vae_pb2_grpc.VAEServiceStub(channel)


def rows_run(server) -> float:
    """Rows the decoder has run, over all its batches."""
    return server.metric("vae_batch_size_sum", graph="decoder")


def array(tensor: vae_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, np.float32).reshape(tensor.shape)


def rows(chunk: vae_pb2.SampleChunk) -> int:
    return chunk.images.shape[0]


@pytest.fixture(scope="module")
def slow_server(start_vae_server):
    return start_vae_server(
        VAE_MAX_BATCH_SIZE="1", VAE_INTRA_OP_THREADS="1", VAE_MAX_CHUNK_ROWS=str(SLOW_CHUNK_ROWS)
    )


def test_a_stalled_reader_holds_the_server_to_a_bounded_lead_and_flat_memory(
    start_vae_server,
) -> None:
    server = start_vae_server()
    process = psutil.Process(server.process.pid)
    channel, stub = open_stub(server)
    with channel:
        call = stub.SampleStream(
            vae_pb2.SampleStreamRequest(count=ENDLESS, seed=1, chunk_rows=1024), timeout=120
        )
        read = [next(call) for _ in range(5)]
        rss_before = process.memory_info().rss
        time.sleep(PAUSE_SECONDS)  # the stall: for this long, nobody reads
        lead_rows = rows_run(server) - sum(rows(chunk) for chunk in read)
        rss_after = process.memory_info().rss
        read += [next(call) for _ in range(5)]
        call.cancel()
    assert lead_rows * FLOAT32_ROW_BYTES <= LEAD_LIMIT_BYTES, lead_rows
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_BYTES, (rss_before, rss_after)
    # Reading on, the stream went on where it had stopped.
    assert [chunk.start_index for chunk in read] == list(range(0, 10 * 1024, 1024))


def test_a_cancelled_stream_stops_within_the_chunk_it_was_making(slow_server) -> None:
    cancelled = slow_server.metric("grpc_server_handled_total", grpc_code="Canceled", **STREAM)
    channel, stub = open_stub(slow_server)
    with channel:
        call = stub.SampleStream(
            vae_pb2.SampleStreamRequest(count=ENDLESS, seed=1, output_dtype=vae_pb2.UINT8),
            timeout=120,
        )
        assert rows(next(call)) == SLOW_CHUNK_ROWS  # the server is on the next chunk now
        before = rows_run(slow_server)
        call.cancel()
        slow_server.wait_for_metric(
            "grpc_server_handled_total", cancelled + 1, grpc_code="Canceled", **STREAM
        )
    assert rows_run(slow_server) - before <= SLOW_CHUNK_ROWS


def calls_gone(server) -> float:
    """Streams that ended because their caller had gone: past the deadline, or Canceled when
    the client's own timer fired first (the server took the deadline a few ms after it)."""
    return sum(
        server.metric("grpc_server_handled_total", grpc_code=code, **STREAM)
        for code in ("DeadlineExceeded", "Canceled")
    )


def test_a_stream_past_its_deadline_stops_within_the_chunk_it_was_making(slow_server) -> None:
    ended, gone = slow_server.metric("grpc_server_handling_seconds_count", **STREAM), calls_gone(
        slow_server
    )
    before = rows_run(slow_server)
    received = 0
    channel, stub = open_stub(slow_server)
    with channel, pytest.raises(grpc.RpcError) as raised:
        # FLOAT32 chunks of 4096 rows (12.25 MiB) are larger than the flow-control window: the
        # server is at most one chunk ahead of the reader when the deadline passes.
        for chunk in stub.SampleStream(
            vae_pb2.SampleStreamRequest(count=ENDLESS, seed=1), timeout=2.0
        ):
            received += rows(chunk)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    slow_server.wait_for_metric("grpc_server_handling_seconds_count", ended + 1, **STREAM)
    assert calls_gone(slow_server) == gone + 1
    # The chunk in the transport, and the one cut short.
    assert rows_run(slow_server) - before - received < 2 * SLOW_CHUNK_ROWS


def test_sigterm_ends_a_stream_unavailable_naming_the_next_row_and_exits_in_the_grace(
    start_vae_server,
) -> None:
    grace_seconds = 20
    server = start_vae_server(VAE_GRACE_SECONDS=str(grace_seconds))
    channel, stub = open_stub(server)
    received = 0
    with channel:
        call = stub.SampleStream(
            vae_pb2.SampleStreamRequest(
                count=ENDLESS, seed=1, chunk_rows=256, output_dtype=vae_pb2.UINT8
            ),
            timeout=120,
        )
        received += rows(next(call))
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        draining = server.wait_for_log("draining", timeout=10)
        with pytest.raises(grpc.RpcError) as ended:
            for chunk in call:
                assert chunk.start_index == received
                received += rows(chunk)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(ended.value.trailing_metadata()) == {"vae-next-index": str(received)}
    assert f"resume at start_index {received}" in ended.value.details()
    assert server.wait_exit(timeout=grace_seconds + 10) == 0
    assert time.monotonic() - signalled < grace_seconds
    assert draining["in_flight"] == 1
    messages = [record["message"] for record in server.records()]
    assert messages.index("draining") < messages.index("stopped")


def test_a_running_stream_finishes_on_the_version_it_started_with(
    start_vae_server, model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    copy_version(model_dir, root, "1")
    server = start_vae_server(VAE_MODEL_DIR=str(root))
    chunks_in_stream = 40
    request = vae_pb2.SampleStreamRequest(
        count=chunks_in_stream * 1024, seed=6, chunk_rows=1024, return_latents=True
    )
    channel, stub = open_stub(server)
    with channel:
        call = stub.SampleStream(request, timeout=120)
        chunks = [next(call)]
        publish(model_dir, root, "2", change_decoder)
        server.signal(signal.SIGHUP)
        server.wait_for_log("model swapped", timeout=60)
        swapped_at = rows_run(server)
        assert stub.Sample(vae_pb2.SampleRequest(count=1), timeout=30).model_version == "2"
        chunks += list(call)
        assert call.code() == grpc.StatusCode.OK
        made_after_the_swap = rows_run(server) - swapped_at
        request.count = 1024
        (later,) = stub.SampleStream(request, timeout=120)
    # Most of the stream was made after the swap; only a few chunks fit the flow-control window.
    assert made_after_the_swap >= chunks_in_stream // 2 * 1024
    assert [chunk.start_index for chunk in chunks] == list(range(0, len(chunks) * 1024, 1024))
    assert {chunk.model_version for chunk in chunks} == {"1"} and later.model_version == "2"
    # Every chunk's images are version 1's decoding of its latents, none version 2's.
    versions = {v: load_model(root / v, intra_op_threads=1) for v in ("1", "2")}
    for chunk in chunks:
        (first,) = versions["1"].decoder.run(array(chunk.latents))
        (second,) = versions["2"].decoder.run(array(chunk.latents))
        np.testing.assert_allclose(array(chunk.images).reshape(first.shape), first, atol=1e-5)
        assert np.abs(first - second).max() > 1e-2
    np.testing.assert_array_equal(array(later.latents), array(chunks[0].latents))
    assert not np.allclose(array(later.images), array(chunks[0].images), atol=1e-2)


def test_streams_beyond_the_limit_are_refused_and_an_ended_one_frees_its_place(
    start_vae_server,
) -> None:
    server = start_vae_server(VAE_MAX_STREAMS="2")
    refused = {"grpc_code": "ResourceExhausted", **STREAM}
    request = vae_pb2.SampleStreamRequest(count=ENDLESS, seed=1, output_dtype=vae_pb2.UINT8)
    channel, stub = open_stub(server)
    with channel:
        running = [stub.SampleStream(request, timeout=120) for _ in range(2)]
        assert all(next(call).start_index == 0 for call in running)  # both hold their place
        with pytest.raises(grpc.RpcError) as third:
            next(stub.SampleStream(request, timeout=30))
        assert third.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 SampleStreams" in third.value.details()
        assert server.metric("grpc_server_handled_total", **refused) == 1
        # Unary calls keep their threads meanwhile.
        assert stub.Sample(vae_pb2.SampleRequest(count=4, seed=1), timeout=30).images.shape[0] == 4
        # A stream that ends frees its place for the next one.
        running.pop().cancel()
        server.wait_for_metric("grpc_server_handled_total", 1, grpc_code="Canceled", **STREAM)
        replacement = stub.SampleStream(request, timeout=120)
        assert next(replacement).start_index == 0
        replacement.cancel()
        running[0].cancel()
