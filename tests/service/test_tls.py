"""TLS and mutual TLS from the VAE_TLS_* files, with certificates made for the test (`pki`).

A TLS server serves the clients that trust its CA and refuses the rest; with a client CA it
also refuses clients without a certificate that CA signed, and refused clients do no harm to
the one being served beside them. Misconfigured files stop start-up with one line naming the
setting.
"""

import json
import subprocess
import sys

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from tests.traffic import Traffic, seeded_requests
from vae_client import VAEClient, channel_credentials, open_channel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tls_server(start_vae_server, pki):
    return start_vae_server(
        VAE_TLS_CERT_FILE=str(pki["server_cert"]), VAE_TLS_KEY_FILE=str(pki["server_key"])
    )


@pytest.fixture(scope="module")
def mtls_server(start_vae_server, pki):
    return start_vae_server(
        VAE_TLS_CERT_FILE=str(pki["server_cert"]), VAE_TLS_KEY_FILE=str(pki["server_key"]),
        VAE_TLS_CLIENT_CA_FILE=str(pki["ca"]),
    )


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    """The status of a call over `channel`, which must fail."""
    with pytest.raises(grpc.RpcError) as raised, VAEClient(channel=channel,
                                                           timeout_seconds=10) as client:
        client.info()
    return raised.value.code()


def test_a_tls_server_serves_clients_trusting_its_ca_and_refuses_the_rest(tls_server, pki):
    trusting = open_channel(tls_server.target, channel_credentials(pki["ca"]))
    with VAEClient(channel=trusting, timeout_seconds=10) as client:
        assert client.info().name == "vae-mnist"
    assert refused(grpc.insecure_channel(tls_server.target)) == grpc.StatusCode.UNAVAILABLE
    # A client whose trust anchor did not sign the server's certificate.
    distrusting = open_channel(tls_server.target, channel_credentials(pki["stranger_cert"]))
    assert refused(distrusting) == grpc.StatusCode.UNAVAILABLE


def test_refused_clients_do_no_harm_to_a_mutual_tls_client_served_beside_them(
    mtls_server, pki, heldout
) -> None:
    credentials = {
        "right certificate": channel_credentials(pki["ca"], pki["client_cert"],
                                                 pki["client_key"]),
        "no certificate": channel_credentials(pki["ca"]),
        "another CA's certificate": channel_credentials(pki["ca"], pki["stranger_cert"],
                                                        pki["stranger_key"]),
    }
    served = Traffic(mtls_server.target, seeded_requests(heldout), callers=2,
                     channel_factory=lambda: open_channel(mtls_server.target,
                                                          credentials["right certificate"]))
    with served:
        for _ in range(3):
            for who in ("no certificate", "another CA's certificate"):
                channel = open_channel(mtls_server.target, credentials[who])
                assert refused(channel) == grpc.StatusCode.UNAVAILABLE, who
            assert refused(grpc.insecure_channel(mtls_server.target)) == (
                grpc.StatusCode.UNAVAILABLE
            )
        served.wait_answered(len(served.calls))
    served.assert_clean()


def test_a_client_of_several_connections_speaks_mutual_tls(mtls_server, pki) -> None:
    credentials = channel_credentials(pki["ca"], pki["client_cert"], pki["client_key"])
    # server_name: the target is an IP address, the certificate is checked against "localhost".
    with VAEClient(mtls_server.target, credentials=credentials, server_name="localhost",
                   connections=2, timeout_seconds=10) as client:
        assert [client.info().name for _ in range(3)] == ["vae-mnist"] * 3
    result = subprocess.run(
        [sys.executable, "-m", "vae_client", "--target", mtls_server.target,
         "--connections", "2", "--server-name", "localhost", "--ca-file", str(pki["ca"]),
         "--cert-file", str(pki["client_cert"]), "--key-file", str(pki["client_key"]), "info"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "vae-mnist"


def test_the_healthcheck_speaks_mutual_tls(mtls_server, pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.healthcheck", "--target", mtls_server.target,
         "--ca-file", str(pki["ca"]), "--cert-file", str(pki["client_cert"]),
         "--key-file", str(pki["client_key"])],
        capture_output=True, text=True, timeout=30,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING")


def encrypted_key(pki, path):
    key = serialization.load_pem_private_key(pki["server_key"].read_bytes(), password=None)
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    return path


def not_pem(path):
    path.write_text("this is not a PEM file\n")
    return path


def empty(path):
    path.write_bytes(b"")
    return path


# (cert, key, client CA, the setting named, words of the reason), each a function of
# (pki, tmp_path) giving a path.
MISCONFIGURATIONS = {
    "certificate missing": (
        lambda p, t: t / "missing.pem", lambda p, t: p["server_key"], None,
        "VAE_TLS_CERT_FILE", "cannot read"),
    "key of another certificate": (
        lambda p, t: p["server_cert"], lambda p, t: p["client_key"], None,
        "VAE_TLS_KEY_FILE", "is not the key of the certificate"),
    "certificate not PEM": (
        lambda p, t: not_pem(t / "cert.pem"), lambda p, t: p["server_key"], None,
        "VAE_TLS_CERT_FILE", "holds no PEM certificate"),
    "key not PEM": (
        lambda p, t: p["server_cert"], lambda p, t: not_pem(t / "key.pem"), None,
        "VAE_TLS_KEY_FILE", "holds no PEM private key"),
    "certificate and key swapped": (
        lambda p, t: p["server_key"], lambda p, t: p["server_cert"], None,
        "VAE_TLS_CERT_FILE", "holds no PEM certificate"),
    "encrypted key": (
        lambda p, t: p["server_cert"], lambda p, t: encrypted_key(p, t / "key.pem"), None,
        "VAE_TLS_KEY_FILE", "the key is encrypted"),
    "empty client CA": (
        lambda p, t: p["server_cert"], lambda p, t: p["server_key"],
        lambda p, t: empty(t / "ca.pem"), "VAE_TLS_CLIENT_CA_FILE", "holds no PEM certificate"),
    "client CA a key": (
        lambda p, t: p["server_cert"], lambda p, t: p["server_key"],
        lambda p, t: p["client_key"], "VAE_TLS_CLIENT_CA_FILE", "holds no PEM certificate"),
}


@pytest.mark.parametrize("case", sorted(MISCONFIGURATIONS))
def test_a_tls_misconfiguration_stops_start_up_with_one_line_naming_the_setting(
    start_vae_server, pki, tmp_path, case
) -> None:
    cert, key, client_ca, setting, reason = MISCONFIGURATIONS[case]
    env = {"VAE_TLS_CERT_FILE": str(cert(pki, tmp_path)),
           "VAE_TLS_KEY_FILE": str(key(pki, tmp_path))}
    if client_ca is not None:
        env["VAE_TLS_CLIENT_CA_FILE"] = str(client_ca(pki, tmp_path))
    server = start_vae_server(wait_serving=False, **env)
    assert server.wait_exit() == 1
    # Every line is one JSON record: grpc never got to print its own reasons.
    records = [json.loads(line) for line in server.lines]
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert error["message"].startswith(f"cannot start: {setting}: "), error
    assert reason in error["message"], error
    assert not any(r["message"] == "serving" for r in records)
