"""The response serializer's A/B: service.wire against protobuf's own, on Sample responses.

For responses of 1,024 and 4,096 images (28 x 28 float32), two ways to the bytes gRPC sends:
- protobuf: `Tensor(data=array.tobytes())` in the message, then `SerializeToString`, as a
  servicer without service.wire would;
- wire: the message and the array in a service.wire.Response, serialized by `wire.serialize`,
  as the service does.

Measured in-process (CPU time per response), and over gRPC: calls to a thread-pool server in
the same process whose handlers answer with one or the other (the median call's latency, and
the CPU time per call of client and server together). Both run in a child process pinned to
the given CPUs with the service's malloc settings (service.__main__.keep_freed_memory): the
allocator decides much of what copying a large response costs, so only the settings the
service runs with make a fair comparison. Reported: each round's figures, their median, and
the ratio protobuf / wire per round.

    python -m bench.serializer [--rounds 5] [--cpus 0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from vae.v1 import vae_pb2

from service import wire
from service.__main__ import keep_freed_memory

ROWS = (1024, 4096)
WAYS = ("protobuf", "wire")
# Long enough that a round's figure is a mean over many responses even at 4,096 rows.
IN_PROCESS_SECONDS = 0.5
GRPC_CALLS = {1024: 200, 4096: 50}
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def by_protobuf(images: np.ndarray) -> bytes:
    rows = len(images)
    return vae_pb2.SampleResponse(
        images=vae_pb2.Tensor(shape=(rows, 28, 28), dtype=vae_pb2.FLOAT32, data=images.tobytes()),
        model_version="1",
    ).SerializeToString()


def by_wire(images: np.ndarray) -> bytes:
    response = wire.Response(
        vae_pb2.SampleResponse(model_version="1"),
        [wire.TensorField("images", images, (len(images), 28, 28))],
    )
    return wire.serialize(response)


SERIALIZERS: dict[str, Callable[[np.ndarray], bytes]] = {"protobuf": by_protobuf, "wire": by_wire}


def cpu_us_per_response(serialize: Callable[[np.ndarray], bytes], images: np.ndarray) -> float:
    serialize(images)
    calls, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < IN_PROCESS_SECONDS:
        serialize(images)
        calls += 1
    return elapsed / calls * 1e6


def _grpc_server(images: dict[int, np.ndarray]) -> tuple[grpc.Server, int]:
    """A server with one method per way; the request is the row count as text."""
    handlers = {
        way: grpc.unary_unary_rpc_method_handler(
            lambda request, context: images[int(request)],
            request_deserializer=bytes.decode,
            response_serializer=serialize,
        )
        for way, serialize in SERIALIZERS.items()
    }
    options = [("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
    server = grpc.server(ThreadPoolExecutor(4), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def grpc_call(channel: grpc.Channel, way: str, rows: int) -> tuple[float, float]:
    """The median latency (µs) and the CPU time per call (µs) of GRPC_CALLS[rows] calls."""
    call = channel.unary_unary(
        f"/bench/{way}", request_serializer=str.encode,
        response_deserializer=vae_pb2.SampleResponse.FromString,
    )
    call(str(rows))
    latencies = []
    cpu_start = time.process_time()
    for _ in range(GRPC_CALLS[rows]):
        start = time.perf_counter()
        call(str(rows))
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    return statistics.median(latencies) * 1e6, cpu / GRPC_CALLS[rows] * 1e6


def measure(rounds: int) -> dict[str, Any]:
    """Every way, size and measure, `rounds` times, the ways alternating within each round."""
    rng = np.random.default_rng(0)
    images = {rows: rng.random((rows, 784), dtype=np.float32) for rows in ROWS}
    for rows in ROWS:
        assert by_protobuf(images[rows]) == by_wire(images[rows])
    figures: dict[str, dict[int, dict[str, list[float]]]] = {
        name: {rows: {way: [] for way in WAYS} for rows in ROWS}
        for name in ("in_process_cpu_us", "grpc_p50_us", "grpc_cpu_us")
    }
    server, port = _grpc_server(images)
    options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            for number in range(rounds):
                # Alternate which way goes first, so a drift in the machine's load is shared.
                ways = WAYS if number % 2 == 0 else WAYS[::-1]
                for rows in ROWS:
                    for way in ways:
                        figures["in_process_cpu_us"][rows][way].append(
                            cpu_us_per_response(SERIALIZERS[way], images[rows])
                        )
                        p50, cpu = grpc_call(channel, way, rows)
                        figures["grpc_p50_us"][rows][way].append(p50)
                        figures["grpc_cpu_us"][rows][way].append(cpu)
    finally:
        server.stop(None)
    return figures


def _prepare_child(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)
    keep_freed_memory()


def measure_in_child(rounds: int, cpus: set[int]) -> dict[str, Any]:
    """`measure` in a fresh process pinned to `cpus`, with the service's malloc settings."""
    context = multiprocessing.get_context("spawn")  # gRPC does not survive a fork
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=_prepare_child, initargs=(cpus,)
    ) as pool:
        return pool.submit(measure, rounds).result()


def print_figures(figures: dict[str, Any]) -> None:
    """One line per measure and size: each way's median (and range), and the ratios."""
    print("response serializer, Sample responses (median over rounds, [min-max]):")
    for name, by_rows in figures.items():
        for rows, by_way in by_rows.items():
            ratios = [p / w for p, w in zip(by_way["protobuf"], by_way["wire"], strict=True)]
            cells = "  ".join(
                f"{way} {statistics.median(values):8,.0f} [{min(values):,.0f}-{max(values):,.0f}]"
                for way, values in by_way.items()
            )
            print(f"  {name:18s} {rows:5d} rows: {cells}  protobuf/wire "
                  f"{statistics.median(ratios):5.2f} (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="service.wire against protobuf's serializer.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpus", default="0", help="CPUs the measuring process is pinned to")
    args = parser.parse_args(argv)
    print_figures(measure_in_child(args.rounds, {int(cpu) for cpu in args.cpus.split(",")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
