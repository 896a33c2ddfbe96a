"""A grpc.aio server for the load generator's tests: `/vae.v1.VAEService/Sample` answers an
empty SampleResponse after `--delay-ms`; every other method is UNIMPLEMENTED.

With `--stall-after-s A --stall-s S`, the first call that arrives A seconds or more after the
first call blocks the whole event loop for S seconds, as a long GC pause or a blocking call in
a handler would: every call in flight and every call arriving meanwhile waits.

With `--tls-cert` and `--tls-key` it serves TLS; with `--client-ca` too, mutual TLS.

Run as `python tests/loadtest/slow_server.py [flags]`; it prints `PORT <n>` once serving and
stops on SIGTERM.
"""

import argparse
import asyncio
import signal
import time
from pathlib import Path

import grpc


def sample_handler(delay_s: float, stall_after_s: float, stall_s: float) -> grpc.RpcMethodHandler:
    """The Sample handler: a fixed delay, and at most one stall of the event loop."""
    first_call: list[float] = []
    stalled: list[bool] = []

    async def sample(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        now = time.monotonic()
        first_call[:] = first_call or [now]
        if stall_s and not stalled and now - first_call[0] >= stall_after_s:
            stalled.append(True)
            time.sleep(stall_s)  # blocking on purpose: the stall must hold every call up
        await asyncio.sleep(delay_s)
        return b""

    return grpc.unary_unary_rpc_method_handler(sample)


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
    handler = sample_handler(args.delay_ms / 1000, args.stall_after_s, args.stall_s)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("vae.v1.VAEService", {"Sample": handler}),)
    )
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
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
