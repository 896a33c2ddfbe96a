"""`make bench`: the service against gRPC's floor and onnxruntime's compute limit, in one run.

1. the floor: bench.floor_server, a bare grpc.aio server returning pre-built responses (the
   targets' reference), and the same on grpcio's thread-pool server, the kind the service runs on;
2. the compute limit: onnxruntime in this process on the same graphs;
3. the service with batching on, and with VAE_MAX_BATCH_SIZE=1 (batching off);
4. the floor plus onnxruntime: the thread-pool floor running each call's graph in its handler,
   the reference for how close the service comes to zero overhead of its own;
5. the response serializer's A/B (bench.serializer): service.wire against protobuf's own on
   responses of 1,024 and 4,096 images, in-process and over gRPC, once the servers are stopped.

The latent-space RPCs (Interpolate, Variations, Score) run on the service alone, at 1 and 32
callers, and are compared with onnxruntime in this process running the same rows, encoder then
decoder (bench.compute.measure_latent): the ratio of rows/s says what their paths cost.
SampleStream, in chunks of 1,024 rows, FLOAT32 and UINT8, runs on the service alone too, its
rows/s held against onnxruntime at batch 1,024. Unary Sample count 1 at 8 callers runs on the
service alone and then with two SampleStream calls running beside it (bench.streams), back to
back: the ratio of their p99s, within each round, says what streams cost unary calls.

Servers run pinned to --server-cpus and the load generator to --client-cpus, so the client never
takes the server's core and each comparison is between equals. Everything is measured in
--rounds rounds; each round measures the compute limit and then every scenario on every server,
and each target's ratio is taken within a round. Reported: the median over the rounds, and each
round's ratio, so the machine's noise shows. Writes bench/results.json and
bench/throughput_latency.png; prints a table and the target ratios.

    python -m bench [--rounds 5] [--duration 2] [--server-cpus 0] [--client-cpus 1]
                    [--connections 1]
    python -m bench --scenarios 'Interpolate|Variations|Score' --rounds 1   # some scenarios

With --scenarios only the scenarios whose names match run, on the servers they need; such a
partial run prints its tables but checks no target, writes no file and skips the A/B.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from bench import compute, serializer
from bench.ghz import ghz_available, run_ghz
from bench.results import (
    FLOOR,
    LATENT_IN_PROCESS,
    REFERENCE,
    THREAD_POOL_FLOOR,
    combine_rounds,
    plot,
    print_table,
)
from bench.scenarios import REPO_ROOT, SCENARIOS, Scenario
from bench.servers import ResourceWatch, RunningServer, start_server
from bench.streams import streams_running
from loadtest.generator import run
from service.config import Config, set_grpc_environment

MODEL_DIR = REPO_ROOT / "models" / "vae-mnist"
RESULTS_PATH = REPO_ROOT / "bench" / "results.json"
PLOT_PATH = REPO_ROOT / "bench" / "throughput_latency.png"
WARM_UP_S = 0.5


def cpu_set(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",")}


def measure_scenario(server: RunningServer, scenario: Scenario, args: argparse.Namespace) -> dict:
    # Background streams, when the scenario has them, run beside the warm-up and both tools.
    with streams_running(server.target, scenario.background_streams or 0) as streams:
        run(scenario.run_config(server.target, WARM_UP_S, args.procs, args.connections))
        with ResourceWatch(server) as watch:
            report = run(
                scenario.run_config(server.target, args.duration, args.procs, args.connections)
            )
        ghz = (run_ghz(scenario, server.target, args.duration, args.client_cpus,
                       args.connections) if ghz_available() else None)
    row: dict[str, Any] = {
        "server": server.name, "scenario": scenario.name, "method": scenario.method,
        "rows": scenario.rows, "concurrency": scenario.concurrency,
        "connections": report.config.connections,
        "offered_rps": scenario.rps, "count": report.count,
        "ok": report.ok_count, "rps": report.rps, "samples_per_s": report.rps * scenario.rows,
        "p50_s": report.percentile_s(50), "p90_s": report.percentile_s(90),
        "p99_s": report.percentile_s(99), "client_cpu_s": report.cpu_s,
        "server_cpu_s": watch.cpu_s, "wall_s": report.total_s,
        "server_peak_rss_mib": watch.peak_rss_bytes / 2**20,
        "status": report.status_counts,
    }
    if scenario.background_streams is not None:
        row["background_streams"] = streams.streams
        row["background_stream_rows_per_s"] = streams.rows_per_s
    if ghz is not None:
        row["ghz"] = ghz
    print(f"  {server.name:19s} {scenario.name:24s} {row['rps']:9,.0f} req/s  "
          f"p50 {row['p50_s'] * 1e3:7.2f} ms  p99 {row['p99_s'] * 1e3:7.2f} ms  "
          f"server cpu {watch.cpu_s / report.total_s:4.0%}  "
          f"client cpu {report.cpu_s / report.total_s:4.0%}  {report.status_counts}", flush=True)
    return row


def runs_on(scenario: Scenario, server: str, services: set[str]) -> bool:
    """Whether `scenario` runs on `server`: the latent-space, streaming and beside-streams ones
    on the service alone, as the floors answer unary Sample and Encode only."""
    return server in services or not scenario.service_only


def measure_round(running: list[RunningServer], version_dir: Path, args: argparse.Namespace,
                  scenarios: list[Scenario], services: set[str]) -> dict:
    """The compute limits, then every scenario on every server it runs on."""
    server_cpus, client_cpus = cpu_set(args.server_cpus), cpu_set(args.client_cpus)
    print(f"  compute limit: onnxruntime in-process on CPUs {sorted(server_cpus)}", flush=True)
    os.sched_setaffinity(0, server_cpus)
    limits = compute.measure(version_dir, threads=args.intra_op_threads)
    latent = compute.measure_latent(version_dir, args.intra_op_threads,
                                    [scenario for scenario in scenarios if scenario.latent])
    os.sched_setaffinity(0, client_cpus)
    rows = []
    # Each scenario runs on the servers back to back (the idle ones cost next to nothing), so
    # a change in the machine's background load touches them all alike and the ratios stay
    # fair; one server after the other, a busy minute skewed them.
    for scenario in scenarios:
        rows += [measure_scenario(server, scenario, args) for server in running
                 if runs_on(scenario, server.name, services)]
    return {"compute_limit_rows_per_s": limits, LATENT_IN_PROCESS: latent, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark vae-serving against its limits.")
    parser.add_argument("--rounds", type=int, default=5,
                        help="times everything is measured; the median is reported")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="seconds per scenario, server and round")
    parser.add_argument("--server-cpus", default="0", help="CPUs the servers are pinned to")
    parser.add_argument("--client-cpus", default="1", help="CPUs the load generator may use")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=1,
                        help="connections per scenario (at most one per caller, at least one "
                        "per process): as many as a server has workers, to reach them all")
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="onnxruntime threads, for the service and the in-process limit")
    parser.add_argument("--scenarios", metavar="PATTERN",
                        help="run only the scenarios whose names match this regular expression; "
                             "checks no target and writes no file")
    args = parser.parse_args(argv)
    scenarios = [scenario for scenario in SCENARIOS
                 if args.scenarios is None or re.search(args.scenarios, scenario.name)]
    if not scenarios:
        parser.error(f"no scenario matches {args.scenarios!r}")
    partial = len(scenarios) < len(SCENARIOS)
    server_cpus, client_cpus = cpu_set(args.server_cpus), cpu_set(args.client_cpus)
    version_dir = max((p for p in MODEL_DIR.iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name))

    threads = {"VAE_INTRA_OP_THREADS": str(args.intra_op_threads)}
    # The thread-pool floors get as many handler threads as the service has by default.
    thread_pool = {"BENCH_FLOOR_THREADS": str(Config().handler_threads)}
    servers: tuple[tuple[str, str, dict[str, str]], ...] = (
        (FLOOR, "bench.floor_server", {}),
        (THREAD_POOL_FLOOR, "bench.floor_server", thread_pool),
        ("batching on", "service", threads),
        ("batching off", "service", {**threads, "VAE_MAX_BATCH_SIZE": "1"}),
        (REFERENCE, "bench.floor_server",
         {**threads, **thread_pool, "BENCH_FLOOR_MODEL_DIR": str(version_dir)}),
    )
    services = {name for name, module, _ in servers if module == "service"}
    servers = tuple(server for server in servers
                    if any(runs_on(scenario, server[0], services) for scenario in scenarios))
    rounds = []
    with contextlib.ExitStack() as stack:
        running = []
        for name, module, env in servers:
            print(f"{name}: python -m {module} {env or ''} on CPUs {sorted(server_cpus)}",
                  flush=True)
            running.append(stack.enter_context(start_server(name, module, server_cpus, env)))
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            rounds.append(measure_round(running, version_dir, args, scenarios, services))
    order = [name for name, _, _ in servers]
    combined = combine_rounds(rounds, with_targets=not partial)
    combined["rows"].sort(key=lambda row: order.index(row["server"]))
    if partial:
        print_table(combined)
        return 0
    print(f"response serializer A/B on CPUs {sorted(server_cpus)}", flush=True)
    serializer_figures = serializer.measure_in_child(args.rounds, server_cpus)

    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu_model(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "server_cpus": sorted(server_cpus),
                     "client_cpus": sorted(client_cpus), "procs": args.procs,
                     "connections": args.connections,
                     "intra_op_threads": args.intra_op_threads,
                     "grpc_environment_of_servers": set_grpc_environment(dict(os.environ))},
        **combined,
        "serializer": serializer_figures,
    }
    RESULTS_PATH.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)
    serializer.print_figures(serializer_figures)
    plot(results, PLOT_PATH)
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)} and {PLOT_PATH.relative_to(REPO_ROOT)}")
    return 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
