"""The supervisor: several complete servers (service.worker) behind one gRPC port.

One server process does its gRPC and Python work on one core, however many it may use (the
GIL). With `VAE_WORKERS` above 1, `python -m service` becomes a supervisor instead, as gRPC's
own multiprocessing example does it: each worker is a whole server, started as a fresh
interpreter (gRPC forbids forking once it runs), binding the same port with SO_REUSEPORT, so
the kernel spreads connections among them; one HTTP/2 connection stays with one worker.

The supervisor imports neither gRPC nor onnxruntime. It holds the gRPC port (port 0 picks
one), serves /metrics for all workers (fleet_metrics), and runs the workers (fleet): their
health, restarts, roll-outs and signals.
"""

import logging
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import start_http_server

from service.config import Config, set_grpc_environment
from service.fleet import Fleet
from service.fleet_metrics import fleet_registry
from service.logging_setup import fields

log = logging.getLogger(__name__)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one) that workers can share, never listening.

    The port is first bound alone, so one held by another program fails loudly, as a single
    server's does; the returned socket then keeps it for the workers' lifetime.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


def supervise(config: Config, argv: Sequence[str]) -> int:
    """Run `config.workers` workers with the service flags `argv`; returns the exit status."""
    grpc_environment = set_grpc_environment()  # the workers inherit it
    try:
        holder = reserve_port(config.host, config.grpc_port)
    except OSError as exc:
        log.error("cannot start: gRPC port %s:%s: %s", config.host, config.grpc_port, exc)
        return 1
    grpc_port = holder.getsockname()[1]
    metrics_dir = Path(tempfile.mkdtemp(prefix="vae-metrics-"))
    try:
        worker_argv = [
            *argv, "--grpc-port", str(grpc_port), "--workers", str(config.workers),
            "--intra-op-threads", str(config.intra_op_threads),
        ]
        fleet = Fleet(config, worker_argv, metrics_dir)
        registry = fleet_registry(metrics_dir, fleet.processes, fleet.models)
        try:
            metrics_server, _ = start_http_server(config.metrics_port, config.host, registry)
        except OSError as exc:
            log.error("cannot start: metrics port %s: %s", config.metrics_port, exc)
            return 1
        try:
            status = fleet.run({
                "grpc_port": grpc_port,
                "metrics_port": metrics_server.server_port,
                "config": config.as_log_fields(),
                "grpc_environment": grpc_environment,
            })
        finally:
            metrics_server.shutdown()
        log.info("stopped", extra=fields(status=status))
        return status
    finally:
        holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
