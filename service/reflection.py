"""Server reflection for the service, so that grpcurl and ghz work without the .proto file."""

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Offer server reflection for `service_names` and for the reflection service itself."""
    reflection.enable_server_reflection((*service_names, reflection.SERVICE_NAME), server)
