"""Start the servers under test as pinned subprocesses and watch their CPU time and memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc
import psutil
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.config import set_grpc_environment

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(target: str, process: subprocess.Popen) -> None:
    """Until one Sample call succeeds: the service is then loaded and warmed, the floor up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before answering")
            try:
                stub.Sample(vae_pb2.SampleRequest(count=1), timeout=1.0)
                return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError(f"server at {target} did not answer within {READY_TIMEOUT_S} s")


@dataclass
class RunningServer:
    name: str
    target: str
    process: subprocess.Popen

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


@contextlib.contextmanager
def start_server(name: str, module: str, cpus: set[int],
                 env: Mapping[str, str] | None = None) -> Iterator[RunningServer]:
    """Run ``python -m module`` pinned to ``cpus`` (and every thread it starts), then stop it.

    Every server under test takes its port from VAE_GRPC_PORT, the service's own setting, and
    gRPC's own settings from the service's defaults (config.GRPC_ENVIRONMENT): the floor then
    runs the same gRPC transport as the service, so only the service's own work is compared.
    The service runs as one process (VAE_WORKERS=1, unless `env` says otherwise), whose CPU
    time and memory are the ones watched.
    """
    port = free_port()
    environment = {**os.environ, "VAE_WORKERS": "1", **(env or {}), "VAE_GRPC_PORT": str(port),
                   "VAE_METRICS_PORT": str(free_port()), "VAE_HOST": "127.0.0.1",
                   "VAE_LOG_LEVEL": "WARNING"}
    set_grpc_environment(environment)
    process = subprocess.Popen([sys.executable, "-m", module], env=environment,
                               preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    try:
        target = f"127.0.0.1:{port}"
        wait_until_answering(target, process)
        yield RunningServer(name, target, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ResourceWatch:
    """CPU seconds and peak RSS of a server process over one scenario."""

    def __init__(self, server: RunningServer, interval_s: float = 0.1) -> None:
        self._process = psutil.Process(server.process.pid)
        self._server = server
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_rss_bytes = 0
        self.cpu_s = 0.0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_bytes = max(self.peak_rss_bytes, self._process.memory_info().rss)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> ResourceWatch:
        self._cpu_before = self._server.cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = self._server.cpu_seconds() - self._cpu_before
