"""SampleStream as one uninterrupted sequence of numpy chunks, resumed where a replica left off.

A stream that ends with UNAVAILABLE (its server is shutting down, or could not be reached) is
opened again at the first row the caller lacks, with the dataset's seed as the server reported
it: row i is a function of (model version, seed, temperature, i) alone, so the rows that follow
are the ones the lost stream would have sent, whichever replica sends them.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from vae.v1 import vae_pb2, vae_pb2_grpc

from vae_client._tensors import from_tensor

# Waits before the 1st, 2nd, ... resumption: doubling from FIRST_BACKOFF_SECONDS, at most
# MAX_BACKOFF_SECONDS, which together span a replica's drain (VAE_GRACE_SECONDS is 15 s).
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class StreamChunk:
    """Rows start_index .. start_index + len(images) - 1 of a SampleStream dataset.

    images: (rows, 28, 28), float32 in [0, 1] or uint8; latents: (rows, latent_dim) float32
    when asked for; seed: the dataset's seed (the caller's, or the one the server picked).
    """

    start_index: int
    images: np.ndarray
    latents: np.ndarray | None
    model_version: str
    seed: int


class ModelVersionChanged(RuntimeError):
    """A resumed stream was served by another model version than its first rows; the rows from
    `next_index` on would not belong to the same dataset."""

    def __init__(self, first_version: str, new_version: str, next_index: int, seed: int) -> None:
        super().__init__(
            f"the stream began on model version {first_version!r} but resumed on "
            f"{new_version!r} at row {next_index} (seed {seed})"
        )
        self.first_version = first_version
        self.new_version = new_version
        self.next_index = next_index
        self.seed = seed


@dataclass(frozen=True)
class StreamRequest:
    """What a SampleStream asks for, less where it starts and its seed (which resuming sets)."""

    count: int
    temperature: float | None
    output_dtype: vae_pb2.DType.ValueType
    chunk_rows: int
    return_latents: bool

    def message(self, start_index: int, seed: int | None) -> vae_pb2.SampleStreamRequest:
        """The request of a stream that starts at `start_index`."""
        return vae_pb2.SampleStreamRequest(
            count=self.count,
            seed=seed,
            start_index=start_index,
            temperature=self.temperature,
            output_dtype=self.output_dtype,
            chunk_rows=self.chunk_rows,
            return_latents=self.return_latents,
        )


def resumed_stream(
    stub: vae_pb2_grpc.VAEServiceStub,
    request: StreamRequest,
    start_index: int,
    seed: int | None,
    *,
    resume_attempts: int,
    timeout_seconds: float | None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[StreamChunk]:
    """The chunks of rows start_index .. request.count - 1, opening the stream again (at most
    `resume_attempts` times in a row without a chunk in between, after a growing wait) when
    it ends with UNAVAILABLE. Other errors, and the last UNAVAILABLE, are raised."""
    next_index = start_index
    first_version: str | None = None
    failures = 0
    while True:
        call = stub.SampleStream(request.message(next_index, seed), timeout=timeout_seconds)
        try:
            for message in call:
                chunk = _chunk(message)
                if first_version is None:
                    first_version = chunk.model_version
                elif chunk.model_version != first_version:
                    raise ModelVersionChanged(
                        first_version, chunk.model_version, next_index, chunk.seed
                    )
                seed, next_index, failures = chunk.seed, chunk.start_index + len(chunk.images), 0
                yield chunk
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= resume_attempts:
                raise
            failures += 1
        finally:
            call.cancel()  # A caller that stopped reading early ends the server's work too.
        sleep(min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (failures - 1)))


def _chunk(message: vae_pb2.SampleChunk) -> StreamChunk:
    latents = from_tensor(message.latents) if message.HasField("latents") else None
    return StreamChunk(
        message.start_index, from_tensor(message.images), latents, message.model_version,
        message.seed,
    )
