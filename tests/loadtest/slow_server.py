"""A grpc.aio server for the load generator's tests: `/vae.v1.VAEService/Sample` answers an
empty SampleResponse after `--delay-ms`; `/vae.v1.VAEService/SampleStream` sends
`--stream-messages` empty SampleChunks, each after `--delay-ms`, and with
`--stream-abort-after K` ends with UNAVAILABLE after K of them instead, as a replica that shuts
down mid-stream does; every other method is UNIMPLEMENTED.

With `--stall-after-s A --stall-s S`, the first call that arrives A seconds or more after the
first call blocks the whole event loop for S seconds, as a long GC pause or a blocking call in
a handler would: every call in flight and every call arriving meanwhile waits.

With `--tls-cert` and `--tls-key` it serves TLS; with `--client-ca` too, mutual TLS.

It keeps count of the Sample and SampleStream calls per connection (gRPC's peer address, one
per TCP connection): `/slowserver.Peers/Get` answers, as JSON bytes, each peer's calls and the
most it had in flight at once.

Run as `python tests/loadtest/slow_server.py [flags]`; it prints `PORT <n>` once serving and
stops on SIGTERM.
"""

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc


class Peers:
    """Per peer (connection): calls, calls in flight now, and the most in flight."""

    def __init__(self) -> None:
        self.by_peer: dict[str, dict[str, int]] = {}

    def start(self, peer: str) -> None:
        counts = self.by_peer.setdefault(peer, {"calls": 0, "in_flight": 0, "most_in_flight": 0})
        counts["calls"] += 1
        counts["in_flight"] += 1
        counts["most_in_flight"] = max(counts["most_in_flight"], counts["in_flight"])

    def end(self, peer: str) -> None:
        self.by_peer[peer]["in_flight"] -= 1

    def handler(self) -> grpc.RpcMethodHandler:
        """The Get handler: the counts so far, as JSON."""

        async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return json.dumps(self.by_peer).encode()

        return grpc.unary_unary_rpc_method_handler(get)


def sample_handler(
    delay_s: float, stall_after_s: float, stall_s: float, peers: Peers
) -> grpc.RpcMethodHandler:
    """The Sample handler: a fixed delay, and at most one stall of the event loop."""
    first_call: list[float] = []
    stalled: list[bool] = []

    async def sample(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peers.start(context.peer())
        try:
            now = time.monotonic()
            first_call[:] = first_call or [now]
            if stall_s and not stalled and now - first_call[0] >= stall_after_s:
                stalled.append(True)
                time.sleep(stall_s)  # blocking on purpose: the stall must hold every call up
            await asyncio.sleep(delay_s)
            return b""
        finally:
            peers.end(context.peer())

    return grpc.unary_unary_rpc_method_handler(sample)


def sample_stream_handler(
    delay_s: float, messages: int, abort_after: int, peers: Peers
) -> grpc.RpcMethodHandler:
    """The SampleStream handler: `messages` chunks, one every `delay_s`, or UNAVAILABLE after
    `abort_after` of them (0: never)."""

    async def sample_stream(
        request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        peers.start(context.peer())
        try:
            for sent in range(messages):
                if abort_after and sent == abort_after:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                await asyncio.sleep(delay_s)
                yield b""
        finally:
            peers.end(context.peer())

    return grpc.unary_stream_rpc_method_handler(sample_stream)


def credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """TLS (mutual with --client-ca) from the flags' PEM files; None for plaintext."""
    if not args.tls_cert:
        return None
    client_ca = Path(args.client_ca).read_bytes() if args.client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def serve(args: argparse.Namespace) -> None:
    """Serve on a free port of 127.0.0.1 until SIGTERM."""
    server = grpc.aio.server()
    peers = Peers()
    handler = sample_handler(args.delay_ms / 1000, args.stall_after_s, args.stall_s, peers)
    stream_handler = sample_stream_handler(
        args.delay_ms / 1000, args.stream_messages, args.stream_abort_after, peers
    )
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(
            "vae.v1.VAEService", {"Sample": handler, "SampleStream": stream_handler}
        ),
        grpc.method_handlers_generic_handler("slowserver.Peers", {"Get": peers.handler()}),
    ))
    tls = credentials(args)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await server.stop(None)


def main() -> None:
    """Parse the flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--stall-after-s", type=float, default=0.0)
    parser.add_argument("--stall-s", type=float, default=0.0)
    parser.add_argument("--stream-messages", type=int, default=4)
    parser.add_argument("--stream-abort-after", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
