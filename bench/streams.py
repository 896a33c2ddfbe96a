"""SampleStream calls kept running beside a measurement, as another client's dataset jobs would.

The streams are read in a process of their own (spawned, so that its gRPC and its threads
cost the load generator nothing but a share of the client's CPUs), as fast as the server sends
them, from before the measurement until after it, then cancelled. A stream's chunks go through
the decoder's batcher like any call's rows, so what the streams take from the server's CPU shows
in the measured calls' latency.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc
from vae.v1 import vae_pb2

from loadtest.scenarios.generate import SEED, STREAM_CHUNK_ROWS

SAMPLE_STREAM = "/vae.v1.VAEService/SampleStream"
# Far more rows than any measurement lasts for: the contract promises every caller streams of
# 10^8 rows (vae.proto, SampleStreamRequest.count), minutes at the server's pace.
ENDLESS_ROWS = 10**8
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@dataclass
class BackgroundStreams:
    """What the streams did while they ran: set when their block ends."""

    streams: int
    rows_per_s: float = 0.0


def stream_request() -> bytes:
    """One endless stream of seeded UINT8 digits in chunks of the default size, serialized."""
    return vae_pb2.SampleStreamRequest(
        count=ENDLESS_ROWS, seed=int(SEED), chunk_rows=STREAM_CHUNK_ROWS,
        output_dtype=vae_pb2.UINT8,
    ).SerializeToString()


def read_streams(target: str, streams: int, pipe: Connection) -> None:
    """The child: open the streams, say "started" once each has sent a chunk, read until told
    to stop, then cancel them and send back (rows received, seconds) or an error's text."""
    errors: list[str] = []
    chunks = [0] * streams
    first_chunks = threading.Semaphore(0)
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        # No deserializer: the chunks stay bytes, and every one holds STREAM_CHUNK_ROWS rows.
        calls = [channel.unary_stream(SAMPLE_STREAM)(stream_request()) for _ in range(streams)]

        def read(index: int) -> None:
            try:
                for _chunk in calls[index]:
                    chunks[index] += 1
                    if chunks[index] == 1:
                        first_chunks.release()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    errors.append(f"a background stream ended with {error.code().name}: "
                                  f"{error.details()}")
                    first_chunks.release()

        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(streams)]
        for reader in readers:
            reader.start()
        for _ in range(streams):
            first_chunks.acquire(timeout=START_TIMEOUT_S)
        started = time.monotonic()
        counted_before = sum(chunks)
        pipe.send(errors[0] if errors else "started")
        pipe.recv()  # "stop"
        counted, elapsed = sum(chunks) - counted_before, time.monotonic() - started
        for call in calls:
            call.cancel()
        for reader in readers:
            reader.join(timeout=STOP_TIMEOUT_S)
    pipe.send(errors[0] if errors else (counted * STREAM_CHUNK_ROWS, elapsed))


@contextlib.contextmanager
def streams_running(target: str, streams: int) -> Iterator[BackgroundStreams]:
    """`streams` SampleStream calls to `target`, each flowing before the block starts and
    cancelled once it ends; their rows per second over the block are then in the result.
    With no streams, nothing runs beside the block."""
    result = BackgroundStreams(streams)
    if not streams:
        yield result
        return
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=read_streams, args=(target, streams, theirs), daemon=True)
    child.start()
    stopped = False
    try:
        if not ours.poll(START_TIMEOUT_S):
            raise RuntimeError(f"the background streams did not start in {START_TIMEOUT_S:g} s")
        if (answer := ours.recv()) != "started":
            raise RuntimeError(answer)
        yield result
        ours.send("stop")
        stopped = True
        if not ours.poll(STOP_TIMEOUT_S):
            raise RuntimeError("the background streams did not stop")
        answer = ours.recv()
        if isinstance(answer, str):
            raise RuntimeError(answer)  # a stream failed while the measurement ran
        rows, seconds = answer
        result.rows_per_s = rows / seconds
    finally:
        if not stopped:  # the block failed: the child waits for a word that will not come
            child.terminate()
        child.join(timeout=STOP_TIMEOUT_S)
        if child.is_alive():
            child.terminate()
