"""Run a scenario with ghz too, when a ghz binary is on PATH (it is not on the project's CI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

from bench.scenarios import PROTO, Scenario


def ghz_available() -> bool:
    return shutil.which("ghz") is not None


def run_ghz(scenario: Scenario, target: str, duration_s: float, client_cpus: str,
            connections: int = 1) -> dict:
    """ghz's requests/s and latencies for the scenario, from its JSON report."""
    config = {
        "proto": str(PROTO), "import-paths": [str(PROTO.parents[2])],
        "call": f"vae.v1.VAEService.{scenario.method}", "host": target, "insecure": True,
        "concurrency": scenario.concurrency, "connections": scenario.connections(connections),
        "duration": f"{duration_s}s", "timeout": "30s",
        "duration-stop": "wait",  # as our generator's runs: the calls in flight at the end count
        "data": scenario.data(), "format": "json",
    }
    if scenario.open_loop:
        # ghz paces its workers to this rate; it times each call from its actual send, so a
        # server that falls behind looks faster to ghz than to our open loop.
        config["rps"] = scenario.rps
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(config, file)
        file.flush()
        output = subprocess.run(["taskset", "-c", client_cpus, "ghz", "--config", file.name],
                                capture_output=True, text=True, check=False).stdout
    report = json.loads(output)
    latencies = {d["percentage"]: d["latency"] / 1e9 for d in report["latencyDistribution"]}
    return {"rps": report["rps"], "p50_s": latencies.get(50), "p99_s": latencies.get(99),
            "connections": config["connections"],
            "status": report.get("statusCodeDistribution", {})}
