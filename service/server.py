"""Wiring: `create_server` builds the gRPC server, `serve` runs the process around it.

As in grpc's examples, the factory is kept apart from the process: `create_server` only
assembles services and binds the port, while `serve` loads the model, starts the metrics
endpoint, handles signals (SIGTERM/SIGINT: drain; SIGHUP: reload the model) and shuts down.

A request body that does not parse as its method's message is answered INVALID_ARGUMENT like
any other bad input: grpc's own handling would answer UNKNOWN with the parser's exception text
and log a traceback per request, so a stream of garbage would flood the log.
"""

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from vae.v1 import vae_pb2

from service.batching import Batcher, BatchPolicySettings
from service.config import Config, ConfigError
from service.errors import InvalidArgument
from service.instrumentation import Handler, InFlightRequests, instrumented, instrumented_stream
from service.logging_setup import fields
from service.metrics import Metrics
from service.model import Model, ModelHolder, ModelLoadError, load_model, newest_version_dir
from service.pipeline import VAEPipeline
from service.reflection import enable_reflection
from service.reload import ModelReloader
from service.servicer import StreamSettings, VAEServicer
from service.tls import server_credentials
from service.wire import serialize

log = logging.getLogger(__name__)

_SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]
SERVICE_NAME = _SERVICE.full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the drain, new calls are still refused with UNAVAILABLE this long before gRPC stops:
# a caller whose request just finished often sends the next one at once, and a call that meets
# gRPC's own shutdown is CANCELLED, which clients do not retry elsewhere.
_LINGER_SECONDS = 0.5
# Once the admitted requests have returned, gRPC's stop has only their responses to flush.
# Streams still open after this, such as load balancers' health Watch calls, are cancelled
# rather than holding the process for the whole grace period.
_FLUSH_SECONDS = 2.0


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
    every step of a call. Each call
    holds a handler thread while its request waits for a batch, so the pool bounds the calls
    the server works on at once; calls beyond it wait in gRPC's queue.

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


class Service:
    """Everything one serving process runs around a loaded model.

    `on_swap`, when given, is told each model a reload swaps in.
    """

    def __init__(
        self,
        config: Config,
        model: Model,
        metrics: Metrics,
        on_swap: Callable[[Model], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.models = ModelHolder(model)
        metrics.set_model(model.name, model.version)
        self.requests = InFlightRequests()
        self.batchers = {
            graph: Batcher(
                graph,
                max_batch_size=config.max_batch_size,
                max_queue_rows=config.max_queue,
                policy=BatchPolicySettings(max_delay_seconds=config.max_delay_ms / 1000),
                load=self.requests,
                metrics=metrics.graph(graph),
            )
            for graph in ("encoder", "decoder")
        }
        pipeline = VAEPipeline(
            self.models, self.batchers["encoder"], self.batchers["decoder"], config.max_request_rows
        )
        self.health = health.HealthServicer()
        self.reloader = ModelReloader(
            config.model_dir,
            self.models,
            metrics,
            config.intra_op_threads,
            config.max_batch_size,
            on_swap,
        )
        streams = StreamSettings(
            config.max_stream_rows, config.max_chunk_rows, lambda: self.requests.draining
        )
        self.server, self.port = create_server(
            config, VAEServicer(pipeline, streams), self.health, metrics, self.requests
        )

    def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING on the health service; nothing once draining."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start(self, serving: bool = True) -> None:
        """Start the batchers and the server, then report SERVING unless told otherwise (a
        worker waits for its supervisor's word that every worker is up)."""
        # grpc's health servicer starts out SERVING; nothing is until the server has started.
        self.set_serving(False)
        for batcher in self.batchers.values():
            batcher.start()
        self.server.start()
        self.set_serving(serving)

    def stop(self, grace_seconds: float) -> bool:
        """Report NOT_SERVING and refuse new requests (UNAVAILABLE); let admitted requests
        finish within the grace; stop. Returns whether they all finished in time."""
        deadline = time.monotonic() + grace_seconds
        self.health.enter_graceful_shutdown()
        drained = self.requests.drain(grace_seconds)
        time.sleep(min(_LINGER_SECONDS, max(0.0, deadline - time.monotonic())))
        # The admitted calls are finished, their responses sent; gRPC's own stop lets any other
        # call end within the flush time or the grace, and cancels whatever is left.
        self.server.stop(min(_FLUSH_SECONDS, max(0.0, deadline - time.monotonic()))).wait()
        for batcher in self.batchers.values():
            batcher.close()
        return drained


def _registry() -> CollectorRegistry:
    """A registry with the process, platform and GC metrics besides the service's own."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class CannotStart(Exception):
    """The service cannot start: the newest model does not load, a file or port is bad."""


def build_service(
    config: Config,
    registry: CollectorRegistry,
    on_swap: Callable[[Model], None] | None = None,
) -> Service:
    """Load the newest model version and assemble the service around it, its metrics in
    `registry`; raises CannotStart with a one-line reason."""
    try:
        model = load_model(
            newest_version_dir(config.model_dir),
            config.intra_op_threads,
            config.max_batch_size,
        )
        return Service(config, model, Metrics(registry), on_swap)
    except (ModelLoadError, ConfigError, OSError, RuntimeError) as exc:
        raise CannotStart(str(exc)) from None


def freeze_heap() -> None:
    """Exempt everything alive now from garbage collection.

    What is alive once the service has started (modules, sessions, the server) lives as long as
    the process: frozen, the garbage collector stops re-scanning it, so a full collection walks
    only what the requests create instead of stalling them all for a walk of the whole process.
    """
    gc.collect()
    gc.freeze()


def serve(config: Config, grpc_environment: dict[str, str] | None = None) -> int:
    """Run the service in this process until SIGTERM or SIGINT, then drain; returns the exit
    status.

    `grpc_environment`: gRPC's own variables in force (config.set_grpc_environment), logged.
    """
    registry = _registry()
    try:
        service = build_service(config, registry)
        metrics_server, _ = start_http_server(config.metrics_port, config.host, registry)
    except (CannotStart, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    service.start()
    freeze_heap()
    model = service.models.current

    def announce() -> None:
        log.info(
            "serving",
            extra=fields(
                model=model.name,
                model_version=model.version,
                grpc_port=service.port,
                metrics_port=metrics_server.server_port,
                config=config.as_log_fields(),
                grpc_environment=grpc_environment or {},
            ),
        )

    drained = run_until_stopped(service, config, announce)
    metrics_server.shutdown()
    log_stopped(drained)
    return 0


def log_stopped(drained: bool) -> None:
    """The last line of a server: whether every admitted request finished within the grace."""
    if drained:
        log.info("stopped")
    else:
        log.warning("stopped; requests still running after the grace period were cancelled")


def run_until_stopped(
    service: Service, config: Config, announce: Callable[[], None] = lambda: None
) -> bool:
    """Serve, reloading on SIGHUP and by polling, until SIGTERM or SIGINT; then drain.
    Returns whether every admitted request finished within the grace period.

    `announce` runs once the signal handlers are in place, so that a signal sent by whoever
    heard it (a test that read the `serving` line, a supervisor told the worker is ready) is
    handled rather than lost or fatal.

    The signal handlers stay in place until the drain is over, and the signals are ignored
    after it: with the default actions back, a second SIGTERM or a SIGHUP during the drain
    would kill the process and every request it had admitted, and one after it would turn a
    clean exit into a kill. The grace period bounds the drain; SIGKILL stops the process at
    once. The handlers only set flags and start threads: Python runs them on the main thread,
    which meanwhile only waits.
    """
    stopping = threading.Event()

    def on_stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            log.warning(
                "already draining; signal ignored", extra=fields(signal=signal.Signals(signum).name)
            )
        stopping.set()

    def on_reload(signum: int, frame: object) -> None:
        if stopping.is_set():
            log.warning("draining; SIGHUP ignored")
        else:
            service.reloader.trigger()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    if config.model_poll_seconds > 0:
        service.reloader.poll_in_background(config.model_poll_seconds, stopping)
    try:
        announce()
        stopping.wait()
        log.info(
            "draining",
            extra=fields(grace_seconds=config.grace_seconds, in_flight=service.requests.count),
        )
        return service.stop(config.grace_seconds)
    finally:
        for signum in (*_STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
