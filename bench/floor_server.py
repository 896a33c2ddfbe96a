"""The floor: a bare gRPC server that answers VAEService calls with pre-built responses.

It parses each request, as the service must, and returns a response of exactly the size the
service would send (zero-filled tensors), serialized once per size. What it reaches is what gRPC
in Python allows on this machine; the service can only come close to it.

By default it is a grpc.aio server, the floor the benchmark's targets are set against. With
BENCH_FLOOR_THREADS set it is grpcio's thread-pool server with that many handler threads, the
kind of server the service runs on.

With BENCH_FLOOR_MODEL_DIR set to a model version directory, each call first runs the graph it
needs on its rows, in the handler, with the service's own sessions (service.model): the floor
plus the inference and nothing else, what a service with no overhead of its own would reach.

    VAE_GRPC_PORT=50099 [BENCH_FLOOR_THREADS=64] [BENCH_FLOOR_MODEL_DIR=models/vae-mnist/1] \
        python -m bench.floor_server
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from vae.v1 import vae_pb2

from service.model import Model, load_model
from service.validation import images_from_proto

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LATENT_DIM = 2
MAX_ROWS = 4096  # the service's default VAE_MAX_REQUEST_ROWS


def zeros(*shape: int, dtype: vae_pb2.DType.ValueType = vae_pb2.FLOAT32) -> vae_pb2.Tensor:
    itemsize = 1 if dtype == vae_pb2.UINT8 else 4
    return vae_pb2.Tensor(shape=shape, dtype=dtype, data=bytes(itemsize * math.prod(shape)))


def sample_response(request: vae_pb2.SampleRequest) -> bytes:
    # UINT8 images when asked (output_dtype), unquantized: the floor does none of the work.
    dtype = vae_pb2.UINT8 if request.output_dtype == vae_pb2.UINT8 else vae_pb2.FLOAT32
    response = vae_pb2.SampleResponse(
        images=zeros(request.count, 28, 28, dtype=dtype), model_version="1"
    )
    if request.return_latents:
        response.latents.CopyFrom(zeros(request.count, LATENT_DIM))
    return response.SerializeToString()


def encode_response(request: vae_pb2.EncodeRequest) -> bytes:
    rows = request.images.shape[0] if request.images.shape else 0
    return vae_pb2.EncodeResponse(
        mean=zeros(rows, LATENT_DIM), log_variance=zeros(rows, LATENT_DIM), model_version="1"
    ).SerializeToString()


def run_decoder(model: Model) -> Callable[[vae_pb2.SampleRequest], object]:
    """Draw the prior noise and decode it, as the service does for Sample."""
    rng = np.random.default_rng()

    def run(request: vae_pb2.SampleRequest) -> object:
        latents = rng.standard_normal((request.count, LATENT_DIM), dtype=np.float32)
        return model.decoder.run(latents)

    return run


def run_encoder(model: Model) -> Callable[[vae_pb2.EncodeRequest], object]:
    """Read the images as the service does and encode them."""
    def run(request: vae_pb2.EncodeRequest) -> object:
        images, _ = images_from_proto(request.images, "images", model.image_shape, MAX_ROWS)
        return model.encoder.run(images)

    return run


def prebuilt(parse: Callable[[bytes], object], build: Callable, key: Callable,
             compute: Callable[[Any], object] | None, asynchronous: bool) -> Callable:
    """A unary handler that answers every request with the same bytes per key, built once,
    after running `compute` on the request when given; a coroutine for grpc.aio when
    `asynchronous`."""
    cache: dict[object, bytes] = {}

    def answer(request: object, context: object) -> bytes:
        if compute is not None:
            compute(request)
        request_key = key(request)
        response = cache.get(request_key)
        if response is None:
            response = cache[request_key] = build(request)
        return response

    async def answer_on_the_loop(request: object, context: object) -> bytes:
        return answer(request, context)

    return grpc.unary_unary_rpc_method_handler(
        answer_on_the_loop if asynchronous else answer,
        request_deserializer=parse, response_serializer=None,
    )


def handlers(model: Model | None, asynchronous: bool) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("vae.v1.VAEService", {
        "Sample": prebuilt(vae_pb2.SampleRequest.FromString, sample_response,
                           lambda r: (r.count, r.return_latents, r.output_dtype),
                           None if model is None else run_decoder(model), asynchronous),
        "Encode": prebuilt(vae_pb2.EncodeRequest.FromString, encode_response,
                           lambda r: tuple(r.images.shape),
                           None if model is None else run_encoder(model), asynchronous),
    })


OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


async def serve_on_the_loop(port: int, model: Model | None) -> None:
    """A grpc.aio server, until SIGTERM."""
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handlers(model, asynchronous=True),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


def serve_on_threads(port: int, model: Model | None, threads: int) -> None:
    """grpcio's thread-pool server with `threads` handler threads, until SIGTERM."""
    server = grpc.server(ThreadPoolExecutor(threads), options=OPTIONS)
    server.add_generic_rpc_handlers((handlers(model, asynchronous=False),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop(1.0))
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("VAE_GRPC_PORT", 50099)),
                        help="port on 127.0.0.1 (default: VAE_GRPC_PORT, as the service)")
    port = parser.parse_args().port
    model_dir = os.environ.get("BENCH_FLOOR_MODEL_DIR")
    intra_op_threads = int(os.environ.get("VAE_INTRA_OP_THREADS", "1"))
    model = (None if model_dir is None
             else load_model(Path(model_dir), intra_op_threads, warmup_rows=1024))
    handler_threads = os.environ.get("BENCH_FLOOR_THREADS")
    if handler_threads:
        serve_on_threads(port, model, int(handler_threads))
    else:
        asyncio.run(serve_on_the_loop(port, model))


if __name__ == "__main__":
    main()
