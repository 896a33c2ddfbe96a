"""Server credentials for TLS and mutual TLS from the configured PEM files."""

from pathlib import Path

import grpc

from service.config import Config, ConfigError, env_name


def server_credentials(config: Config) -> grpc.ServerCredentials:
    """TLS credentials from the certificate and key; with a client CA, clients must present a
    certificate it signed (mutual TLS)."""
    assert config.tls_cert_file is not None and config.tls_key_file is not None
    certificate = _read("tls_cert_file", config.tls_cert_file)
    key = _read("tls_key_file", config.tls_key_file)
    client_ca = (
        None
        if config.tls_client_ca_file is None
        else _read("tls_client_ca_file", config.tls_client_ca_file)
    )
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{env_name(setting)}: cannot read {path}: {exc.strerror}") from None
