"""`python -m service.healthcheck --target HOST:PORT`: exit 0 iff the server says SERVING.

For container HEALTHCHECKs and exec probes; Kubernetes' own gRPC probe does the same without
TLS. Prints the status (or the error) on one line.
"""

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client._channel import add_connection_arguments, channel_from_arguments


def check(channel: grpc.Channel, service: str = "", timeout_seconds: float = 2.0) -> str:
    """The health status name of `service` ("" is the whole server) behind `channel`.

    Raises grpc.RpcError when the server cannot be asked.
    """
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when SERVING, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m service.healthcheck", description=__doc__)
    add_connection_arguments(parser)
    parser.add_argument("--service", default="", help="service name; empty: the whole server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        with channel_from_arguments(args) as channel:
            status = check(channel, args.service, args.timeout)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}")
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
