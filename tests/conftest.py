"""Shared fixtures: the real server, started as `python -m service` in a subprocess.

The server binds port 0 for gRPC and metrics on 127.0.0.1; the ports it got come from its JSON
start-up log line ("serving"), so parallel test runs never race for a port. A server counts as
started once the gRPC health service says SERVING.

    def test_something(vae_server):               # one default server per test module
        with VAEClient(vae_server.target) as client: ...
        vae_server.metric("vae_queue_depth", graph="decoder")  # a scraped value

    def test_other(start_vae_server):             # a server with its own settings
        server = start_vae_server(VAE_MAX_BATCH_SIZE="1", VAE_GRACE_SECONDS="5")

`pki` makes a CA, server and client certificates for TLS tests.
"""

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from service.config import GRPC_ENVIRONMENT

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO / "models" / "vae-mnist"
START_TIMEOUT_SECONDS = 60.0


@dataclass
class ServerProcess:
    """A running `python -m service` and what the tests need to talk to it."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    target: str = ""
    metrics_url: str = ""
    log_closed: bool = False
    _new_line: threading.Condition = field(default_factory=threading.Condition)

    def records(self) -> list[dict[str, Any]]:
        """The server's log so far, one dict per JSON line (non-JSON lines are skipped)."""
        parsed = []
        for line in list(self.lines):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed

    def wait_for_log(
        self, message: str, timeout: float = START_TIMEOUT_SECONDS, occurrence: int = 1
    ) -> dict[str, Any]:
        """The `occurrence`-th log record with `message` (the first by default), waiting for it;
        fails if the process ends first."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                found = [r for r in self.records() if r.get("message") == message]
                if len(found) >= occurrence:
                    return found[occurrence - 1]
                if self.log_closed:
                    raise AssertionError(
                        f"server exited ({self.process.returncode}) before logging {message!r}:\n"
                        + "\n".join(self.lines)
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {message!r} log line in {timeout} s:\n" + "\n".join(self.lines)
                    )
                self._new_line.wait(min(remaining, 0.5))

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """The health status name the server reports for `service`."""
        with grpc.insecure_channel(self.target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def scrape(self) -> str:
        """The text of GET /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the scraped samples called `name` whose labels include `labels` (0 if
        none)."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.scrape())
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def wait_for_metric(
        self, name: str, at_least: float, timeout: float = 30.0, **labels: str
    ) -> float:
        """Scrape until the metric reaches `at_least`; its value then. Fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < at_least:
            assert time.monotonic() < deadline, f"{name}{labels} stayed at {value} < {at_least}"
            time.sleep(0.02)
        return value

    def signal(self, signum: int) -> None:
        """Send `signum` to the server process."""
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to end on its own, and for the last of its log to be read;
        returns its exit status."""
        status = self.process.wait(timeout=timeout)
        with self._new_line:
            assert self._new_line.wait_for(lambda: self.log_closed, timeout), "log never closed"
        return status


def _server_env(overrides: dict[str, str]) -> dict[str, str]:
    # The caller's own VAE_* settings and gRPC variables must not leak into a test server.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VAE_") and key not in GRPC_ENVIRONMENT
    }
    env.update(
        VAE_HOST="127.0.0.1",
        VAE_GRPC_PORT="0",
        VAE_METRICS_PORT="0",
        VAE_LOG_FORMAT="json",
        VAE_MODEL_DIR=str(DEFAULT_MODEL_DIR),
        # One server process unless a test asks for workers (tests/service/test_workers.py).
        VAE_WORKERS="1",
    )
    env.update(overrides)
    return env


def launch_server(wait_serving: bool = True, **env: str) -> ServerProcess:
    """Start `python -m service` with VAE_* settings `env` on top of the test defaults.

    With `wait_serving`, returns once health says SERVING (and fails if the process exits
    instead); without it, returns at once, e.g. to watch a server that must refuse to start.
    """
    server_env = _server_env(env)
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=server_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(process, server_env)

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with server._new_line:
                server.lines.append(line.rstrip("\n"))
                server._new_line.notify_all()
        with server._new_line:
            server.log_closed = True
            server._new_line.notify_all()

    threading.Thread(target=read_log, daemon=True).start()
    if wait_serving:
        try:
            record = server.wait_for_log("serving")
            server.target = f"127.0.0.1:{record['grpc_port']}"
            server.metrics_url = f"http://127.0.0.1:{record['metrics_port']}/metrics"
            if "VAE_TLS_CERT_FILE" not in env:
                assert server.health() == "SERVING"
        except BaseException:
            process.kill()
            process.wait()
            raise
    return server


StartServer = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_vae_server() -> Iterator[StartServer]:
    """Start servers with settings of the test's choosing (`start(VAE_X="..")`); all of them
    are stopped when the test module ends."""
    servers: list[ServerProcess] = []

    def start(wait_serving: bool = True, **env: str) -> ServerProcess:
        server = launch_server(wait_serving, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="module")
def vae_server(start_vae_server: StartServer) -> ServerProcess:
    """One server with the default settings on the bundled model, shared by a test module."""
    return start_vae_server()


def _issue(name: str, issuer: Any = None, ca: bool = False) -> tuple[Any, x509.Certificate]:
    """A key and certificate for `name` (valid for localhost and 127.0.0.1 unless a CA),
    signed by `issuer` (key, certificate) or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def _write(directory: Path, name: str, key: Any, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files for TLS tests: `ca`; `server_cert`/`server_key` and `client_cert`/`client_key`
    signed by it; `stranger_cert`/`stranger_key` signed by another CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue("test CA", ca=True)
    stranger_ca = _issue("another CA", ca=True)
    paths = {"ca": _write(directory, "ca", *ca)[1]}
    paths["server_key"], paths["server_cert"] = _write(directory, "server", *_issue("server", ca))
    paths["client_key"], paths["client_cert"] = _write(directory, "client", *_issue("client", ca))
    paths["stranger_key"], paths["stranger_cert"] = _write(
        directory, "stranger", *_issue("stranger", stranger_ca)
    )
    return paths


@pytest.fixture(scope="session")
def heldout() -> np.ndarray:
    """The 999 held-out MNIST digits, uint8 (999, 784)."""
    with np.load(REPO / "data" / "mnist10k.npz") as data:
        return data["images"][data["split"] == 1]
