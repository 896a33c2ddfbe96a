"""`python -m bench.workers`: what several workers behind one port change, measured.

For each worker count (VAE_WORKERS, `--workers 1,2`), the server pinned to as many of
`--server-cpus` as it has workers and the load in this process pinned to `--client-cpus`:
closed-loop Sample(count=1) callers on several connections for a fixed time give calls/s, the
server's CPU time per call (every process: supervisor and workers, from its own /metrics) and
each worker's share of that CPU. Then the same worker counts all on the first server CPU:
what the workers themselves cost per call, apart from any contention with the load for CPUs
(on two CPUs the load must share one with the second worker). Then one process allowed two of
the server CPUs against one process on one (a process whose threads hop between cores pays
for GIL hand-offs). Then, with 2
workers, one worker is SIGKILLed under load: the calls that failed, by status, and the time
until every worker serves again. Last, roll-outs by SIGHUP under load: how long the workers
answered with two versions side by side (the supervisor's `model rolled out` line). Prints one
JSON object and, with `--out`, writes it (`make bench` writes bench/workers.json).
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.model import newest_version_dir

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "models" / "vae-mnist"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Server:
    """`python -m service` with `workers` workers on free ports, its JSON log followed."""

    def __init__(self, workers: int, model_dir: Path = BUNDLED_MODEL,
                 cpus: set[int] | None = None) -> None:
        env = {**os.environ, "VAE_WORKERS": str(workers), "VAE_MODEL_DIR": str(model_dir),
               "VAE_GRPC_PORT": "0",
               "VAE_METRICS_PORT": "0", "VAE_HOST": "127.0.0.1", "VAE_LOG_FORMAT": "json"}
        # Pinned before it starts: the workers inherit the CPUs, and each divides them for
        # onnxruntime as in a pod with that CPU limit.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, stderr=subprocess.PIPE, text=True,
            preexec_fn=None if cpus is None else (lambda: os.sched_setaffinity(0, cpus)),
        )
        self.records: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        serving = self.wait_for("serving")
        self.target = f"127.0.0.1:{serving['grpc_port']}"
        self.metrics_url = f"http://127.0.0.1:{serving['metrics_port']}/metrics"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.records.append(record)
                self._changed.notify_all()

    def wait_for(self, message: str, after: int = 0) -> dict[str, Any]:
        """The first record with `message` from index `after` on, waiting up to 60 s."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((r for r in self.records[after:] if r["message"] == message), None),
                timeout=60,
            )
        if found is None:
            raise RuntimeError(f"no {message!r} line")
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """process_cpu_seconds_total of each process ("" with a single one)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        return {
            sample.labels.get("process", ""): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "process_cpu_seconds_total"
        }


@contextmanager
def running(workers: int, model_dir: Path = BUNDLED_MODEL,
            cpus: set[int] | None = None) -> Iterator[Server]:
    server = Server(workers, model_dir, cpus)
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)


async def load(target: str, connections: int, callers: int, seconds: float,
               outcomes: Counter[str]) -> None:
    """Closed-loop Sample(count=1) calls: `callers` on each of `connections` connections.

    The calls wait for a connection rather than failing at once while their channel
    reconnects (wait_for_ready), so a failure counted is a call the server had.
    """
    deadline = time.monotonic() + seconds
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
                for _ in range(connections)]

    async def caller(stub: vae_pb2_grpc.VAEServiceStub) -> None:
        while time.monotonic() < deadline:
            try:
                await stub.Sample(vae_pb2.SampleRequest(count=1), timeout=10, wait_for_ready=True)
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[error.code().name] += 1

    try:
        await asyncio.gather(*(caller(vae_pb2_grpc.VAEServiceStub(channel))
                               for channel in channels for _ in range(callers)))
    finally:
        for channel in channels:
            await channel.close()


def throughput(workers: int, cpus: set[int], args: argparse.Namespace) -> dict[str, Any]:
    """Calls/s, CPU ms per call and each process's share of the CPU under a steady load, the
    server on `cpus`."""
    with running(workers, cpus=cpus) as server:
        asyncio.run(load(server.target, args.connections, args.callers, 2.0, Counter()))
        before, outcomes = server.cpu_seconds(), Counter[str]()
        asyncio.run(load(server.target, args.connections, args.callers, args.seconds, outcomes))
        after = server.cpu_seconds()
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    calls = outcomes["OK"]
    return {
        "workers": workers,
        "server_cpus": sorted(cpus),
        "calls_per_second": round(calls / args.seconds),
        "server_cpu_ms_per_call": round(1000 * sum(used.values()) / calls, 3),
        "cpu_seconds_by_process": {name: round(value, 2) for name, value in used.items()},
        "outcomes": dict(outcomes),
    }


def kill_under_load(args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL worker 1 halfway through a load on 2 workers: outcomes and time to recover."""
    with running(2) as server:
        victim = [r["pid"] for r in server.records
                  if r["message"] == "worker starting" and r["worker"] == 1][-1]
        outcomes: Counter[str] = Counter()
        loader = threading.Thread(target=lambda: asyncio.run(
            load(server.target, args.connections, args.callers, args.seconds, outcomes)))
        loader.start()
        time.sleep(args.seconds / 2)
        mark = len(server.records)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        server.wait_for("all workers serving", after=mark)
        recovered = time.monotonic() - killed
        loader.join()
    return {"outcomes": dict(outcomes), "seconds_until_every_worker_serves": round(recovered, 2)}


def publish_version(root: Path, version: str) -> None:
    """Copy the bundled model in as `version`, complete before it appears."""
    staged = root / ".staging" / version
    shutil.copytree(newest_version_dir(BUNDLED_MODEL), staged)
    manifest = json.loads((staged / "model.json").read_text())
    manifest["version"] = version
    (staged / "model.json").write_text(json.dumps(manifest))
    staged.rename(root / version)


def rollout_skew(args: argparse.Namespace, rollouts: int = 5) -> list[float]:
    """Seconds two versions answered side by side, per SIGHUP roll-out under load."""
    skews = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        publish_version(root, "1")
        with running(2, root) as server:
            loader = threading.Thread(target=lambda: asyncio.run(load(
                server.target, args.connections, args.callers, 3.0 * rollouts, Counter())))
            loader.start()
            for version in range(2, 2 + rollouts):
                publish_version(root, str(version))
                mark = len(server.records)
                server.process.send_signal(signal.SIGHUP)
                skews.append(server.wait_for("model rolled out", after=mark)["skew_seconds"])
            loader.join()
    return skews


def cpu_list(text: str) -> list[int]:
    """CPUs written as "0,1" or "0-3"."""
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--callers", type=int, default=4, help="concurrent calls per connection")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2,4")
    parser.add_argument("--server-cpus", default="0,1",
                        help="CPUs for the server; a count of N workers gets the first N")
    parser.add_argument("--client-cpus", default="0,1", help="CPUs for the load (this process)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    server_cpus = cpu_list(args.server_cpus)
    os.sched_setaffinity(0, cpu_list(args.client_cpus))
    counts = [int(n) for n in args.workers.split(",")]
    if max(counts) > len(server_cpus):
        parser.error(f"{max(counts)} workers need as many --server-cpus, got {server_cpus}")
    figures: dict[str, Any] = {
        "settings": {"connections": args.connections, "callers": args.callers,
                     "seconds": args.seconds, "server_cpus": server_cpus,
                     "client_cpus": cpu_list(args.client_cpus), "cpus": os.cpu_count()},
        "throughput": [throughput(n, set(server_cpus[:n]), args) for n in counts],
    }
    figures["workers_sharing_one_cpu"] = [throughput(n, {server_cpus[0]}, args) for n in counts]
    if len(server_cpus) >= 2:
        figures["one_process"] = [throughput(1, set(server_cpus[:n]), args) for n in (1, 2)]
    figures["kill_under_load"] = kill_under_load(args)
    figures["rollout_skew_seconds"] = rollout_skew(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
