"""Fixtures of the load-testing tests: a deliberately slow gRPC server of our own."""

import datetime
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    ) -> str:
        server = subprocess.Popen(
            [sys.executable, str(SLOW_SERVER), f"--delay-ms={delay_ms}"]
            + [f"--stall-after-s={stall_after_s}", f"--stall-s={stall_s}", *tls_flags],
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


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """PEM files of a throw-away CA, a server certificate for `vae.test` and a client one."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loadtest CA")])
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    files = {"ca": _write(tmp_path / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))}
    for role, name in (("server", "vae.test"), ("client", "loadtest-client")):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = _certificate(subject, key, ca_name, ca_key, dns_name=name)
        files[f"{role}_cert"] = _write(
            tmp_path / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM)
        )
        files[f"{role}_key"] = _write(
            tmp_path / f"{role}-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return files


def _certificate(subject, key, issuer, issuer_key, is_ca=False, dns_name=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if dns_name:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)
