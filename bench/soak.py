"""`make soak`: a mixed load on the real service for a set time; RSS and open files over time.

Every scenario file in loadtest/scenarios runs at once, each from its own load-generator process
(open loop at a modest rate, so the server is busy but not saturated), while the server's resident
memory and open file descriptors are sampled. Memory must level off: the report compares the
growth in the last half of the run with the first half.

    python -m bench.soak [--minutes 5] [--rps 100] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil

from bench.scenarios import REPO_ROOT
from bench.servers import start_server

SCENARIO_DIR = REPO_ROOT / "loadtest" / "scenarios"
RESULTS_PATH = REPO_ROOT / "bench" / "soak.json"
LEVEL_TOLERANCE_MIB = 8.0


def start_loads(target: str, seconds: float, rps: float) -> list[subprocess.Popen]:
    """One open-loop load generator per scenario file, for `seconds`."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "loadtest", "--config", str(path), "-z", f"{seconds}s",
             "--rps", str(rps), "-c", "16", "--format", "json", "-o", "/dev/null", target],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
        )
        for path in sorted(SCENARIO_DIR.glob("*.json"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak the service with a mixed load.")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rps", type=float, default=100.0, help="per scenario file")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    samples = []
    with start_server("service", "service", set(range(psutil.cpu_count()))) as server:
        process = psutil.Process(server.process.pid)
        loads = start_loads(server.target, seconds, args.rps)
        start = time.monotonic()
        print("   time s   RSS MiB   open fds   threads", flush=True)
        while any(load.poll() is None for load in loads):
            sample = {"t_s": round(time.monotonic() - start, 1),
                      "rss_mib": process.memory_info().rss / 2**20,
                      "open_fds": process.num_fds(), "threads": process.num_threads()}
            samples.append(sample)
            print(f"{sample['t_s']:9.0f} {sample['rss_mib']:9.1f} {sample['open_fds']:10d} "
                  f"{sample['threads']:9d}", flush=True)
            time.sleep(args.interval)
        failed = [load.args for load in loads if load.returncode != 0]
    half = len(samples) // 2
    first_growth = samples[half]["rss_mib"] - samples[1]["rss_mib"] if half > 1 else 0.0
    last_growth = samples[-1]["rss_mib"] - samples[half]["rss_mib"]
    levelled = last_growth <= max(LEVEL_TOLERANCE_MIB, first_growth)
    fds_steady = samples[-1]["open_fds"] <= samples[1]["open_fds"] + 4
    RESULTS_PATH.write_text(json.dumps({"samples": samples, "minutes": args.minutes,
                                        "rps_per_scenario": args.rps}, indent=1) + "\n")
    print(f"RSS growth: first half {first_growth:+.1f} MiB, last half {last_growth:+.1f} MiB: "
          f"{'levels off' if levelled else 'STILL GROWING'}; open fds "
          f"{samples[1]['open_fds']} -> {samples[-1]['open_fds']}"
          f"{'' if fds_steady else ' (GROWING)'}; load generators failing: {len(failed)}")
    return 0 if levelled and fds_steady and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
