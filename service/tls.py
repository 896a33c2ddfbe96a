"""Server credentials for TLS and mutual TLS from the configured PEM files.

The files are checked with Python's own TLS library before grpc sees them: grpc refuses a bad
certificate, key or CA bundle only when binding the port, with "Failed to bind to address" and
the real reason in lines of its own, and it accepts an empty client CA bundle, after which it
refuses every client. Checked here, each mistake stops start-up with one line naming the file.
"""

import ssl
from pathlib import Path

import grpc

from service.config import Config, ConfigError, env_name


def server_credentials(config: Config) -> grpc.ServerCredentials:
    """TLS credentials from the certificate and key; with a client CA, clients must present a
    certificate it signed (mutual TLS). Raises ConfigError when a file is unusable."""
    assert config.tls_cert_file is not None and config.tls_key_file is not None
    certificate = _read("tls_cert_file", config.tls_cert_file, b"-----BEGIN CERTIFICATE-----")
    key = _read("tls_key_file", config.tls_key_file, b"PRIVATE KEY-----")
    _check_certificates("tls_cert_file", config.tls_cert_file)
    _check_key_pair(config.tls_cert_file, config.tls_key_file)
    client_ca = None
    if config.tls_client_ca_file is not None:
        client_ca = _read(
            "tls_client_ca_file", config.tls_client_ca_file, b"-----BEGIN CERTIFICATE-----"
        )
        _check_certificates("tls_client_ca_file", config.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read(setting: str, path: Path, pem_marker: bytes) -> bytes:
    """The file's bytes; ConfigError unless readable and holding a PEM block with the marker."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{env_name(setting)}: cannot read {path}: {exc.strerror}") from None
    if pem_marker not in data:
        what = "private key" if b"KEY" in pem_marker else "certificate"
        raise ConfigError(f"{env_name(setting)}: {path} holds no PEM {what}")
    return data


def _no_password() -> bytes:
    # grpc cannot use an encrypted key, so one must fail here rather than prompt on a terminal.
    raise ConfigError(
        f"{env_name('tls_key_file')}: the key is encrypted; the server needs it unencrypted"
    )


def _check_certificates(setting: str, path: Path) -> None:
    """Raise ConfigError unless every certificate in the PEM file parses."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{env_name(setting)}: {path} does not load ({exc.reason or exc})"
        ) from None


def _check_key_pair(cert_file: Path, key_file: Path) -> None:
    """Raise ConfigError unless the key parses and belongs to the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problem = f"{key_file} is not the key of the certificate in {cert_file}"
        else:
            problem = f"{key_file} does not load ({exc.reason or exc})"
        raise ConfigError(f"{env_name('tls_key_file')}: {problem}") from None
