"""TLS and mutual TLS from the VAE_TLS_* files, with certificates made for the test."""

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.client import VAEClient, channel_credentials, open_channel

pytestmark = pytest.mark.timeout(120)


def issue(name: str, issuer=None, ca: bool = False):
    """A key and certificate for `name`, signed by `issuer` (key, cert) or self-signed."""
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


def write(directory: Path, name: str, key, cert) -> tuple[Path, Path]:
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = issue("test CA", ca=True)
    stranger_ca = issue("another CA", ca=True)
    paths = {"ca": write(directory, "ca", *ca)[1]}
    paths["server_key"], paths["server_cert"] = write(directory, "server", *issue("server", ca))
    paths["client_key"], paths["client_cert"] = write(directory, "client", *issue("client", ca))
    paths["stranger_key"], paths["stranger_cert"] = write(
        directory, "stranger", *issue("stranger", stranger_ca)
    )
    return paths


@pytest.fixture(scope="module")
def mtls_server(start_vae_server, pki):
    return start_vae_server(
        VAE_TLS_CERT_FILE=str(pki["server_cert"]),
        VAE_TLS_KEY_FILE=str(pki["server_key"]),
        VAE_TLS_CLIENT_CA_FILE=str(pki["ca"]),
    )


def client_for(server, pki, who: str | None) -> VAEClient:
    credentials = channel_credentials(
        pki["ca"],
        pki[f"{who}_cert"] if who else None,
        pki[f"{who}_key"] if who else None,
    )
    return VAEClient(channel=open_channel(server.target, credentials), timeout_seconds=10)


def test_a_client_with_a_certificate_from_the_client_ca_is_served(mtls_server, pki) -> None:
    with client_for(mtls_server, pki, "client") as client:
        assert client.sample(2, seed=1).images.shape == (2, 28, 28)


@pytest.mark.parametrize("who", [None, "stranger"])
def test_a_client_without_the_right_certificate_is_refused(mtls_server, pki, who) -> None:
    with pytest.raises(grpc.RpcError) as raised, client_for(mtls_server, pki, who) as client:
        client.sample(1)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_client_is_refused(mtls_server) -> None:
    with pytest.raises(grpc.RpcError) as raised, VAEClient(mtls_server.target) as client:
        client.sample(1)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_healthcheck_speaks_mutual_tls(mtls_server, pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.healthcheck", "--target", mtls_server.target,
         "--ca-file", str(pki["ca"]), "--cert-file", str(pki["client_cert"]),
         "--key-file", str(pki["client_key"])],
        capture_output=True, text=True, timeout=30,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING")


def test_tls_without_a_client_ca_serves_any_client_that_trusts_the_server(
    start_vae_server, pki
) -> None:
    server = start_vae_server(
        VAE_TLS_CERT_FILE=str(pki["server_cert"]), VAE_TLS_KEY_FILE=str(pki["server_key"])
    )
    with client_for(server, pki, None) as client:
        assert client.info().name == "vae-mnist"


def test_an_unreadable_certificate_stops_start_up_with_one_line(
    start_vae_server, pki, tmp_path
) -> None:
    server = start_vae_server(
        wait_serving=False,
        VAE_TLS_CERT_FILE=str(tmp_path / "missing.pem"),
        VAE_TLS_KEY_FILE=str(pki["server_key"]),
    )
    assert server.wait_exit() == 1
    (error,) = [r for r in server.records() if r["level"] == "ERROR"]
    assert error["message"].startswith("cannot start: VAE_TLS_CERT_FILE: cannot read")
