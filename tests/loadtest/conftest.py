"""Fixtures of the load-testing tests: a deliberately slow gRPC server of our own."""

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAE_PROTO = str(REPO / "protos" / "vae" / "v1" / "vae.proto")
SLOW_SERVER = Path(__file__).with_name("slow_server.py")

StartSlowServer = Callable[..., str]


@pytest.fixture
def vae_proto() -> str:
    """The contract's .proto file, by absolute path."""
    return VAE_PROTO


@pytest.fixture
def slow_server() -> Iterator[StartSlowServer]:
    """Start tests/loadtest/slow_server.py with the given settings; returns its `host:port`."""
    servers: list[subprocess.Popen[str]] = []

    def start(
        delay_ms: float = 50,
        stall_after_s: float = 0,
        stall_s: float = 0,
        tls_flags: tuple[str, ...] = (),
        stream_messages: int = 4,
        stream_abort_after: int = 0,
    ) -> str:
        server = subprocess.Popen(
            [sys.executable, str(SLOW_SERVER), f"--delay-ms={delay_ms}"]
            + [f"--stall-after-s={stall_after_s}", f"--stall-s={stall_s}", *tls_flags]
            + [f"--stream-messages={stream_messages}"]
            + [f"--stream-abort-after={stream_abort_after}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()  # "PORT <n>" once serving; "" if it died first
        assert line.startswith("PORT "), f"slow server did not start: {line!r}"
        return f"127.0.0.1:{line.split()[1]}"

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
