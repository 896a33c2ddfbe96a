"""`python -m service.healthcheck --target HOST:PORT`: exit 0 iff the server says SERVING.

For container HEALTHCHECKs and exec probes; Kubernetes' own gRPC probe does the same without
TLS. Prints the status (or the error) on one line.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(channel: grpc.Channel, service: str = "", timeout_seconds: float = 2.0) -> str:
    """The health status name of `service` ("" is the whole server) behind `channel`.

    Raises grpc.RpcError when the server cannot be asked.
    """
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A plain-text channel to --target, or TLS when any of the certificate flags is given."""
    if not (args.ca_file or args.cert_file or args.key_file):
        return grpc.insecure_channel(args.target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca_file.read_bytes() if args.ca_file else None,
        private_key=args.key_file.read_bytes() if args.key_file else None,
        certificate_chain=args.cert_file.read_bytes() if args.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when SERVING, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m service.healthcheck", description=__doc__)
    parser.add_argument("--target", default="localhost:50051", help="host:port of the server")
    parser.add_argument("--ca-file", type=Path, help="use TLS, trusting this PEM CA bundle")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client private key (mutual TLS)")
    parser.add_argument("--server-name", help="name to check the server's certificate against")
    parser.add_argument("--service", default="", help="service name; empty: the whole server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        with open_channel(args) as channel:
            status = check(channel, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}")
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
