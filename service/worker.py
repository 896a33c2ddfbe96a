"""`python -m service.worker`: one of the server processes a supervisor runs (service.supervisor).

A worker runs the same service as a single server process, with three differences: it shares
the gRPC port with the other workers (SO_REUSEPORT); its metrics go to the supervisor's
multiprocess directory instead of an HTTP endpoint of its own; and it talks to its supervisor.
On the report pipe (`--report-fd`) it writes one JSON object per line: `ready` once its server
has started, `model` after each swap, `health` after each change of its health status. From
stdin it reads `serving` or `not-serving`: its health says SERVING only while every worker is
up. Stdin closing means the supervisor is gone: the worker then drains and exits as on SIGTERM.

The supervisor starts it as a fresh interpreter, so no gRPC or onnxruntime state is ever
forked. Its remaining arguments are the service's own flags.
"""

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from service.__main__ import keep_freed_memory
from service.config import Config, ConfigError, load_config, set_grpc_environment
from service.logging_setup import configure_logging, fields

log = logging.getLogger("service.worker")

SERVING, NOT_SERVING = "serving", "not-serving"


class SupervisorLink:
    """The worker's side of the pipes to its supervisor: file descriptors read and written
    without Python's buffered files, whose locks a thread blocked in a read would hold while
    the interpreter exits (a fatal error)."""

    def __init__(self, reports_fd: int, commands_fd: int) -> None:
        self._reports_fd = reports_fd
        self._commands_fd = commands_fd
        self._lock = threading.Lock()

    def _send(self, **message: Any) -> None:
        line = (json.dumps(message) + "\n").encode()
        # One write, shorter than a pipe writes atomically. Should the supervisor be gone,
        # the end of stdin says so.
        with self._lock, contextlib.suppress(OSError):
            os.write(self._reports_fd, line)

    def ready(self, name: str, version: str) -> None:
        """The server has started, serving model `name` at `version`."""
        self._send(event="ready", model=name, version=version)

    def model_swapped(self, version: str) -> None:
        """A reload swapped in `version`."""
        self._send(event="model", version=version)

    def _commands(self) -> Iterator[str]:
        """The supervisor's lines, until it closes the pipe."""
        pending = b""
        while chunk := os.read(self._commands_fd, 4096):
            *lines, pending = (pending + chunk).split(b"\n")
            yield from (line.decode().strip() for line in lines)

    def follow(self, set_serving: Callable[[bool], None]) -> None:
        """Apply the supervisor's word on the health status, in a thread, acknowledging each;
        when stdin ends, SIGTERM this process."""

        def read() -> None:
            for line in self._commands():
                serving = line == SERVING
                set_serving(serving)
                self._send(event="health", serving=serving)
            log.warning("the supervisor is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=read, name="supervisor-link", daemon=True).start()


def serve_worker(config: Config, link: SupervisorLink) -> int:
    """Run the service until SIGTERM, reporting to the supervisor; returns the exit status."""
    # Imported only now: gRPC reads its environment once, when it loads.
    from prometheus_client import CollectorRegistry

    from service.server import (
        CannotStart,
        build_service,
        freeze_heap,
        log_stopped,
        run_until_stopped,
    )

    try:
        # Metrics go to the multiprocess directory; this registry is never scraped.
        service = build_service(
            config, CollectorRegistry(), lambda model: link.model_swapped(model.version)
        )
    except CannotStart as exc:
        log.error("cannot start: %s", exc)
        return 1
    service.start(serving=False)
    freeze_heap()
    model = service.models.current

    def announce() -> None:
        log.info(
            "worker started",
            extra=fields(pid=os.getpid(), grpc_port=service.port, model_version=model.version),
        )
        link.follow(service.set_serving)
        link.ready(model.name, model.version)

    log_stopped(run_until_stopped(service, config, announce))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the worker's own flags and the service's, then serve; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m service.worker", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--index", type=int, required=True, help="the worker's number, from 0")
    parser.add_argument("--report-fd", type=int, required=True, help="pipe to the supervisor")
    args, service_argv = parser.parse_known_args(argv)
    # Until the server handles SIGHUP (a reload), one would end the process: a worker still
    # starting loads the newest version anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(service_argv)
    except ConfigError as exc:
        print(f"vae-serve worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level, {"worker": args.index})
    keep_freed_memory()
    set_grpc_environment()
    return serve_worker(config, SupervisorLink(args.report_fd, sys.stdin.fileno()))


if __name__ == "__main__":
    sys.exit(main())
