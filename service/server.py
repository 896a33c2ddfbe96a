"""The server process: `build_service` assembles it, `serve` runs it until it is stopped.

As in grpc's examples, the factory is kept apart from the process: service.grpc_server's
`create_server` only assembles services and binds the port, while `serve` loads the model,
starts the metrics endpoint, handles signals (SIGTERM/SIGINT: drain; SIGHUP: reload the model)
and shuts down.
"""

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)

from service.batching import Batcher, BatchPolicySettings
from service.config import Config, ConfigError
from service.grpc_server import SERVICE_NAME, create_server
from service.instrumentation import InFlightRequests
from service.logging_setup import fields
from service.metrics import Metrics
from service.model import Model, ModelHolder, ModelLoadError, load_model, newest_version_dir
from service.pipeline import VAEPipeline
from service.reload import ModelReloader
from service.servicer import StreamSettings, VAEServicer

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the drain, new calls are still refused with UNAVAILABLE this long before gRPC stops:
# a caller whose request just finished often sends the next one at once, and a call that meets
# gRPC's own shutdown is CANCELLED, which clients do not retry elsewhere.
_LINGER_SECONDS = 0.5
# Once the admitted requests have returned, gRPC's stop has only their responses to flush.
# Streams still open after this, such as load balancers' health Watch calls, are cancelled
# rather than holding the process for the whole grace period.
_FLUSH_SECONDS = 2.0
# How often the main thread, waiting to be stopped, wakes up. Python runs signal handlers on
# the main thread only, between bytecodes: a signal the kernel hands to another thread, or one
# that lands just before the main thread blocks, trips its handler while the main thread sleeps
# on, so an untimed wait could leave a SIGHUP or SIGTERM unhandled (seen: under load, one
# worker of two missed a SIGHUP sent just after start). Waking up runs any tripped handler.
_SIGNAL_CHECK_SECONDS = 0.25


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
            self.models,
            self.batchers["encoder"],
            self.batchers["decoder"],
            config.max_request_rows,
            config.stream_piece_rows,
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
            config.max_stream_rows,
            config.max_chunk_rows,
            config.max_streams,
            lambda: self.requests.draining,
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
        while not stopping.wait(_SIGNAL_CHECK_SECONDS):
            pass
        log.info(
            "draining",
            extra=fields(grace_seconds=config.grace_seconds, in_flight=service.requests.count),
        )
        return service.stop(config.grace_seconds)
    finally:
        for signum in (*_STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
