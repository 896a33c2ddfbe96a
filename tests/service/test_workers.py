"""Several workers behind one port (VAE_WORKERS=2): real processes, no mocks.

The supervisor's workers share the gRPC port, each connection served by one of them; /metrics
counts every call once whichever worker answered; health says SERVING only while every worker
is up; a killed worker is restarted while the others serve on, and one that keeps dying stops
the process; SIGTERM drains every worker and loses no admitted call; SIGHUP rolls every worker
to the new version, also when it comes the moment they start serving.

Which worker holds a connection is read from /proc: the worker whose sockets include an
established one on the gRPC port.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from tests.model_versions import copy_version, publish
from tests.traffic import CHANNEL_OPTIONS, Traffic, seeded_requests

pytestmark = pytest.mark.timeout(180)

# gRPC Python channels to one target share a connection unless told not to.
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
REFUSALS = ("the server is shutting down", "failed to connect", "Connection refused")


def own_connection(target: str) -> grpc.Channel:
    """A channel with a TCP connection of its own."""
    return grpc.insecure_channel(target, options=OWN_CONNECTION)


def worker_pids(server) -> dict[int, int]:
    """The pid of each worker now, from the supervisor's `worker starting` lines."""
    return {r["worker"]: r["pid"] for r in server.records() if r["message"] == "worker starting"}


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections on `port` among the sockets of process `pid`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    held = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                held += 1
    return held


def grpc_port(server) -> int:
    return int(server.target.rsplit(":", 1)[1])


@pytest.fixture
def served_models(model_dir: Path, tmp_path: Path) -> Path:
    """A model directory holding a copy of the bundled model as version 1."""
    root = tmp_path / "models"
    copy_version(model_dir, root, "1")
    return root


def test_workers_share_the_port_each_connection_on_one_and_metrics_count_each_call_once(
    start_vae_server,
) -> None:
    server = start_vae_server(VAE_WORKERS="2")
    assert server.health() == "SERVING"
    connections, calls_each = 16, 3
    request = vae_pb2.SampleRequest(count=4, seed=11, return_latents=True)
    channels = [own_connection(server.target) for _ in range(connections)]
    try:
        answers = {
            vae_pb2_grpc.VAEServiceStub(channel).Sample(request, timeout=30).SerializeToString()
            for channel in channels for _ in range(calls_each)
        }
        held = {index: connections_held(pid, grpc_port(server))
                for index, pid in worker_pids(server).items()}
    finally:
        for channel in channels:
            channel.close()
    # Every connection stays on one worker, and both workers hold some (2**-15 odds against).
    assert sum(held.values()) == connections and min(held.values()) > 0, held
    # Seeded answers are bitwise the same whichever worker gave them.
    assert len(answers) == 1
    sample = {"grpc_method": "Sample"}
    assert server.metric("grpc_server_started_total", **sample) == connections * calls_each
    assert server.metric("grpc_server_handled_total", grpc_code="OK", **sample) == (
        connections * calls_each)
    assert server.metric("grpc_server_handling_seconds_count", **sample) == (
        connections * calls_each)
    assert server.metric("vae_queue_depth", graph="decoder") == 0
    assert server.metric("vae_model_info", version="1") == 1
    for process in ("supervisor", "worker-0", "worker-1"):
        assert server.metric("process_resident_memory_bytes", process=process) > 0


def test_health_is_not_serving_until_every_worker_is_up(
    start_vae_server, served_models, model_dir, tmp_path
) -> None:
    server = start_vae_server(VAE_WORKERS="2", VAE_MODEL_DIR=str(served_models))
    # The next worker to start finds version 2, whose manifest is a FIFO: it stays in its
    # start-up until the test writes the manifest.
    staged = copy_version(model_dir, tmp_path / "staging", "2")
    manifest = (staged / "model.json").read_bytes()
    (staged / "model.json").unlink()
    os.mkfifo(staged / "model.json")
    staged.rename(served_models / "2")
    os.kill(worker_pids(server)[1], signal.SIGKILL)
    writer: list[int] = []
    opener = threading.Thread(
        target=lambda: writer.append(os.open(served_models / "2" / "model.json", os.O_WRONLY))
    )
    opener.start()
    opener.join(60)
    assert writer, "the new worker never began to load the model"
    # Worker 1 is stuck in its start-up: worker 0, the only one listening, answers.
    deadline = time.monotonic() + 30
    while server.health() == "SERVING":
        assert time.monotonic() < deadline, "health stayed SERVING with a worker down"
    assert [server.health() for _ in range(5)] == ["NOT_SERVING"] * 5
    os.write(writer[0], manifest)
    os.close(writer[0])
    server.wait_for_log("all workers serving")
    assert server.health() == "SERVING"
    assert server.health("vae.v1.VAEService") == "SERVING"


def test_a_killed_worker_is_restarted_and_the_others_are_unaffected(
    start_vae_server, heldout
) -> None:
    server = start_vae_server(VAE_WORKERS="2")
    victim = worker_pids(server)[1]
    traffic = Traffic(server.target, seeded_requests(heldout, rows=(1, 16)), callers=8,
                      channel_factory=lambda: own_connection(server.target))
    with traffic:
        traffic.wait_answered(len(traffic.calls))
        survivor_connections = connections_held(worker_pids(server)[0], grpc_port(server))
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        exited = server.wait_for_log("worker exited; restarting it")
        server.wait_for_log("all workers serving")
        back_after = time.monotonic() - killed
        # A caller whose channel lost its connection fails at once until it reconnects.
        deadline = time.monotonic() + 60
        while not all(log.outcomes[-1] == "OK" for log in traffic.logs):
            assert time.monotonic() < deadline, traffic.counts()
            traffic.wait_answered(1)
    assert (exited["worker"], exited["pid"], exited["status"]) == (1, victim, -signal.SIGKILL)
    assert worker_pids(server)[1] != victim
    assert back_after < 30
    # Callers on the survivor saw nothing; on the victim, only UNAVAILABLE, then answers again.
    unaffected = [log for log in traffic.logs if not log.errors]
    assert len(unaffected) >= survivor_connections
    for log in traffic.logs:
        assert log.wrong == []
        assert {e.split(": ")[1] for e in log.errors} <= {"UNAVAILABLE"}, log.errors
        assert log.outcomes[-1] == "OK"
    assert server.metric("grpc_server_handled_total", grpc_code="OK") >= traffic.counts()["OK"]
    assert server.health() == "SERVING"


def test_sigterm_under_load_drains_every_worker_and_loses_no_admitted_call(
    start_vae_server, heldout
) -> None:
    # One row per onnxruntime run: a 4096-row request is still running when SIGTERM comes.
    server = start_vae_server(VAE_WORKERS="2", VAE_GRACE_SECONDS="30", VAE_MAX_BATCH_SIZE="1")
    unavailable = lambda error: error.code() == grpc.StatusCode.UNAVAILABLE  # noqa: E731
    traffic = Traffic(server.target, seeded_requests(heldout, rows=(1, 16)), callers=6,
                      channel_factory=lambda: own_connection(server.target), stop_on=unavailable)
    long_traffic = Traffic(server.target, [("Sample", vae_pb2.SampleRequest(count=4096, seed=3))],
                           callers=2, channel_factory=lambda: own_connection(server.target),
                           stop_on=unavailable)
    with traffic:
        traffic.wait_answered(len(traffic.calls))
        with long_traffic:
            server.wait_for_metric("vae_queue_depth", 1024, graph="decoder")
            server.signal(signal.SIGTERM)
            assert server.wait_exit(timeout=60) == 0, "\n".join(server.lines)
    records = server.records()
    drains = [r for r in records if r["message"] == "draining" and "worker" in r]
    assert sorted(r["worker"] for r in drains) == [0, 1]
    assert sum(r["in_flight"] for r in drains) >= 1
    assert [r["status"] for r in records if r["message"] == "worker stopped"] == [0, 0]
    assert not [r for r in records if r["level"] in ("WARNING", "ERROR")]
    for log in traffic.logs + long_traffic.logs:
        assert log.wrong == []
        assert log.outcomes[:-1] == ["OK"] * (len(log.outcomes) - 1)
        (refusal,) = log.errors
        assert refusal.split(": ")[1] == "UNAVAILABLE"
        assert any(words in refusal for words in REFUSALS), refusal


def test_sighup_rolls_every_worker_to_the_new_version(
    start_vae_server, served_models, model_dir, heldout
) -> None:
    server = start_vae_server(VAE_WORKERS="2", VAE_MODEL_DIR=str(served_models))
    traffic = Traffic(server.target, seeded_requests(heldout, rows=(1, 16)), callers=4,
                      channel_factory=lambda: own_connection(server.target))
    with traffic:
        traffic.wait_answered(1)
        publish(model_dir, served_models, "2")
        server.signal(signal.SIGHUP)
        rolled_out = server.wait_for_log("model rolled out", timeout=60)
        traffic.wait_answered(len(traffic.calls))
    traffic.assert_clean()
    swaps = [r for r in server.records() if r["message"] == "model swapped"]
    assert sorted((r["worker"], r["new_version"]) for r in swaps) == [(0, "2"), (1, "2")]
    assert rolled_out["model_version"] == "2" and rolled_out["skew_seconds"] >= 0
    for _ in range(8):
        with own_connection(server.target) as channel:
            info = vae_pb2_grpc.VAEServiceStub(channel).GetModelInfo(
                vae_pb2.GetModelInfoRequest(), timeout=30)
        assert info.version == "2"
    assert server.metric("vae_model_info", version="1") == 0
    assert server.metric("vae_model_info", version="2") == 1
    assert server.metric("vae_model_reload_total", result="success") == 2


@contextlib.contextmanager
def sample_calls_in_a_loop(target: str, connections: int) -> Iterator[list[str]]:
    """Sample calls, one caller per connection of its own, until the block ends; yields the
    failures seen (none expected). Not tests.traffic.Traffic: it first asks the server for the
    reference answers of its calls, which would move the signal past the moment under test."""
    stop, failures = threading.Event(), []

    def call() -> None:
        with own_connection(target) as channel:
            stub = vae_pb2_grpc.VAEServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.Sample(vae_pb2.SampleRequest(count=1), timeout=30)
                except grpc.RpcError as error:
                    failures.append(f"{error.code().name}: {error.details()}")

    callers = [threading.Thread(target=call, daemon=True) for _ in range(connections)]
    for caller in callers:
        caller.start()
    try:
        yield failures
    finally:
        stop.set()
        for caller in callers:
            caller.join(60)


def test_a_sighup_the_moment_every_worker_serves_still_reaches_every_worker(
    start_vae_server, model_dir, tmp_path
) -> None:
    """Python runs signal handlers on the main thread, between bytecodes: a worker whose main
    thread slept in an untimed wait missed, under load, about every other SIGHUP sent just as
    it started serving, and stayed on the old version. Several tries, each a fresh server."""
    for attempt in range(4):
        root = tmp_path / f"models-{attempt}"
        copy_version(model_dir, root, "1")
        server = start_vae_server(wait_serving=False, VAE_WORKERS="2", VAE_MODEL_DIR=str(root))
        serving = server.wait_for_log("serving", timeout=60)
        target = f"127.0.0.1:{serving['grpc_port']}"
        with sample_calls_in_a_loop(target, connections=8) as failures:
            publish(model_dir, root, "2")
            server.signal(signal.SIGHUP)
            rolled_out = server.wait_for_log("model rolled out", timeout=20)
        assert (rolled_out["model_version"], failures) == ("2", [])
        assert server.stop() == 0


def test_a_worker_failing_at_start_up_stops_the_process_with_exit_1(
    start_vae_server, tmp_path
) -> None:
    server = start_vae_server(wait_serving=False, VAE_WORKERS="2", VAE_MODEL_DIR=str(tmp_path))
    assert server.wait_exit(timeout=60) == 1
    supervisor_errors = [r["message"] for r in server.records()
                         if r["level"] == "ERROR" and r["logger"] == "service.supervisor"]
    (line,) = supervisor_errors
    assert line.startswith("cannot start: worker ") and "before every worker was serving" in line


def test_a_worker_that_keeps_dying_stops_the_process_with_one_error_line(
    start_vae_server, served_models, model_dir
) -> None:
    server = start_vae_server(VAE_WORKERS="2", VAE_MODEL_DIR=str(served_models))
    # Every worker started from now on fails: the newest version is broken.
    publish(model_dir, served_models, "2", lambda d: (d / "encoder.onnx").write_bytes(b"no"))
    os.kill(worker_pids(server)[1], signal.SIGKILL)
    assert server.wait_exit(timeout=120) == 1
    records = server.records()
    supervisor_errors = [r["message"] for r in records
                         if r["level"] == "ERROR" and r["logger"] == "service.supervisor"]
    assert supervisor_errors == ["worker 1 exited 6 times within 60 s, last with status 1; "
                                 "stopping"]
    restarts = [r["restart_in_seconds"] for r in records
                if r["message"] == "worker exited; restarting it"]
    assert restarts == [0.5, 1.0, 2.0, 4.0, 8.0]
    # The healthy worker drained and stopped cleanly.
    assert [r["status"] for r in records if r["message"] == "worker stopped"] == [0]


def test_the_supervisor_loads_neither_grpc_nor_onnxruntime() -> None:
    # gRPC forbids forking once it runs; a supervisor that never loads it cannot fork it.
    code = ("import sys, service.__main__, service.supervisor;"
            "print(sorted({'grpc', 'onnxruntime'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"
