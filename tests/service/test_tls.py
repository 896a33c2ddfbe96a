"""TLS and mutual TLS from the VAE_TLS_* files, with certificates made for the test (`pki`)."""

import subprocess
import sys

import grpc
import pytest

from vae_client import VAEClient, channel_credentials, open_channel

pytestmark = pytest.mark.timeout(120)


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
