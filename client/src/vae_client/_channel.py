"""Opening a gRPC channel to the service, in plain text or TLS / mutual TLS."""

import argparse
from pathlib import Path

import grpc

# Large enough for the biggest request and response the server accepts by default
# (4096 float32 images); the server's own limit is VAE_MAX_MESSAGE_BYTES.
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def channel_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials: trust `ca_file` (else the system roots), and present the client
    certificate `cert_file`/`key_file` when the server asks for one (mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --target, --connections and the TLS flags (--ca-file, --cert-file, --key-file,
    --server-name)."""
    parser.add_argument("--target", default="localhost:50051", help="host:port of the server")
    parser.add_argument(
        "--connections", type=_at_least_one, default=1,
        help="TCP connections to open, calls spread over them in turn (default 1)",
    )
    parser.add_argument("--ca-file", type=Path, help="use TLS, trusting this PEM CA bundle")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client private key (mutual TLS)")
    parser.add_argument("--server-name", help="name to check the server's certificate against")


def credentials_from_arguments(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """The TLS credentials that flags added by `add_connection_arguments` describe; None for
    plaintext."""
    if args.ca_file or args.cert_file or args.key_file:
        return channel_credentials(args.ca_file, args.cert_file, args.key_file)
    return None


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    *,
    server_name: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    own_connection: bool = False,
) -> grpc.Channel:
    """A blocking channel to `target` (host:port); TLS when `credentials` are given.

    `server_name` overrides the name checked against the server's certificate, for a target
    reached by another name (an IP address, a port-forward). With `own_connection` the channel
    opens a TCP connection of its own; otherwise gRPC lets channels of one process with the same
    target and settings share one.
    """
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if own_connection:
        # Connections live in subchannels, which gRPC keeps in one pool per process and hands
        # to every channel that asks for the same address and settings; a local pool is ours.
        options.append(("grpc.use_local_subchannel_pool", 1))
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def _at_least_one(text: str) -> int:
    """A count of 1 or more, for argparse."""
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number
