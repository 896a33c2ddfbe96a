"""The gRPC server: VAEService's handler table, health and reflection, bound to its port.

A request body that does not parse as its method's message is answered INVALID_ARGUMENT like
any other bad input: grpc's own handling would answer UNKNOWN with the parser's exception text
and log a traceback per request, so a stream of garbage would flood the log.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from vae.v1 import vae_pb2

from service.config import Config
from service.errors import InvalidArgument
from service.instrumentation import Handler, InFlightRequests, instrumented, instrumented_stream
from service.metrics import Metrics
from service.reflection import enable_reflection
from service.servicer import VAEServicer
from service.tls import server_credentials
from service.wire import serialize

_SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]
SERVICE_NAME = _SERVICE.full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class MalformedRequest:
    """Stands in for a request whose bytes did not parse as `type_name`."""

    def __init__(self, type_name: str, error: DecodeError) -> None:
        self.type_name = type_name
        self.error = error


def _tolerant_parser(message_type: type[Message]) -> Any:
    """A request deserializer that returns a MalformedRequest instead of raising."""
    type_name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(type_name, exc)

    return parse


def _refusing_malformed(method: Handler) -> Handler:
    """`method`, but a MalformedRequest is refused as bad input instead of being passed on."""

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, MalformedRequest):
            raise InvalidArgument(
                "request", f"the body is not a valid {request.type_name} message"
            )
        return method(request, context)

    return handler


def _add_vae_service(
    server: grpc.Server,
    servicer: VAEServicer,
    metrics: Metrics,
    requests: InFlightRequests,
) -> None:
    """Register VAEService's methods. Per method: the request parsed by a parser that never
    raises, a malformed one refused, the servicer's method run inside the instrumentation (for
    a streaming response, the stream's), and its response, or each message of its stream,
    serialized by service.wire.

    This replaces the generated `add_VAEServiceServicer_to_server` to swap in the parsers and
    the serializer.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in _SERVICE.methods:
        servicer_method = _refusing_malformed(getattr(servicer, method.name))
        parser = _tolerant_parser(getattr(vae_pb2, method.input_type.name))
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                instrumented_stream(
                    servicer_method,
                    metrics.rpc(SERVICE_NAME, method.name, "server_stream"),
                    requests,
                ),
                request_deserializer=parser,
                response_serializer=serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                instrumented(servicer_method, metrics.rpc(SERVICE_NAME, method.name), requests),
                request_deserializer=parser,
                response_serializer=serialize,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def create_server(
    config: Config,
    servicer: VAEServicer,
    health_servicer: health_pb2_grpc.HealthServicer,
    metrics: Metrics,
    requests: InFlightRequests,
) -> tuple[grpc.Server, int]:
    """A gRPC server with the VAE, health and (if configured) reflection services, bound
    to `config.host:config.grpc_port` with TLS when configured; returns it and the bound port.

    It is grpcio's thread-pool server, not grpc.aio's: on one core it answers far more calls
    per second than a grpc.aio server doing nothing at all (make bench measures both), as it
    runs each handler straight through on a pool thread instead of waking the event loop for
    every step of a call. Each call holds a handler thread while its request waits for a
    batch, so the pool bounds the calls the server works on at once; calls beyond it wait in
    gRPC's queue.

    Raises ConfigError when a TLS file cannot be read, RuntimeError when the port is taken.
    """
    server = grpc.server(
        ThreadPoolExecutor(config.handler_threads, thread_name_prefix="grpc-handler"),
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # One process fails loudly when the port is taken, instead of sharing it with
            # another; workers share it with each other (service.supervisor).
            ("grpc.so_reuseport", int(config.workers > 1)),
        ]
    )
    _add_vae_service(server, servicer, metrics, requests)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        enable_reflection(server, (SERVICE_NAME, HEALTH_SERVICE_NAME))
    address = f"{config.host}:{config.grpc_port}"
    if config.tls:
        port = server.add_secure_port(address, server_credentials(config))
    else:
        port = server.add_insecure_port(address)
    return server, port
