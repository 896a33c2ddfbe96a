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

from service.client import channel_credentials, open_channel


def check(
    target: str,
    service: str = "",
    timeout_seconds: float = 2.0,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> str:
    """The health status name of `service` ("" is the whole server) at `target`.

    Raises grpc.RpcError when the server cannot be asked.
    """
    with open_channel(target, credentials, server_name=server_name) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when SERVING, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m service.healthcheck", description=__doc__)
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--service", default="", help="service name; empty: the whole server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    parser.add_argument("--ca-file", type=Path, help="use TLS, trusting this PEM CA bundle")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="client private key (mutual TLS)")
    parser.add_argument("--server-name", help="name to check the server's certificate against")
    args = parser.parse_args(argv)
    credentials = None
    if args.ca_file or args.cert_file or args.key_file:
        credentials = channel_credentials(args.ca_file, args.cert_file, args.key_file)
    try:
        status = check(args.target, args.service, args.timeout, credentials, args.server_name)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}")
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
