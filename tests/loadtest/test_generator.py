"""The load generator against a real, deliberately slow gRPC server (slow_server.py)."""

import json

import pytest

from loadtest import RunConfig, run
from loadtest.cli import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, main

SAMPLE = "vae.v1.VAEService.Sample"
GHZ_REPORT_FIELDS = {
    "date",
    "options",
    "count",
    "total",
    "average",
    "fastest",
    "slowest",
    "rps",
    "errorDistribution",
    "statusCodeDistribution",
    "latencyDistribution",
    "histogram",
    "details",
}


def sample_config(host: str, proto: str, **settings) -> RunConfig:
    return RunConfig(
        call=SAMPLE, host=host, proto=proto, insecure=True, data=({"count": 1},), **settings
    )


def cli_json(capsys, *flags: str) -> tuple[int, dict]:
    status = main([*flags, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


def test_open_loop_latency_includes_the_server_delay(slow_server, vae_proto) -> None:
    host = slow_server(delay_ms=50)
    report = run(sample_config(host, vae_proto, rps=40, total=40))
    assert report.status_counts == {"OK": 40}
    assert report.open_loop
    assert report.percentile_s(50) >= 0.050


def test_a_stall_shows_in_the_open_loop_tail(slow_server, vae_proto) -> None:
    host = slow_server(delay_ms=50, stall_after_s=0.5, stall_s=1.0)
    report = run(sample_config(host, vae_proto, rps=50, total=100))
    assert report.status_counts == {"OK": 100}
    # Calls due during the stall wait for it: about a third of them take 0.05 s to 1 s.
    assert report.percentile_s(99) >= 0.5
    assert report.percentile_s(90) >= 0.5


def test_closed_loop_hides_most_of_the_same_stall(slow_server, vae_proto) -> None:
    """Coordinated omission, the reason for the open loop: workers stall with the server, so
    the stall costs one slow sample per worker instead of every call that was due."""
    host = slow_server(delay_ms=50, stall_after_s=0.5, stall_s=1.0)
    report = run(sample_config(host, vae_proto, concurrency=2, duration_s=2.0))
    assert report.slowest_s >= 1.0
    assert report.percentile_s(90) < 0.5


def test_wrong_method_shows_unimplemented_and_exits_non_zero(
    slow_server, vae_proto, capsys
) -> None:
    host = slow_server(delay_ms=1)
    decode = ["--call", "vae.v1.VAEService.Decode", "-d", "{}", "-n", "10", "-c", "2"]
    status, report = cli_json(capsys, host, "--insecure", "--proto", vae_proto, *decode)
    assert status == EXIT_FAILED
    assert report["statusCodeDistribution"] == {"Unimplemented": 10}
    assert [error.split(" desc = ")[0] for error in report["errorDistribution"]] == [
        "rpc error: code = Unimplemented"
    ]


def test_a_method_missing_from_the_proto_cannot_run(slow_server, vae_proto, capsys) -> None:
    host = slow_server(delay_ms=1)
    status = main([host, "--insecure", "--proto", vae_proto, "--call", "vae.v1.VAEService.Nope"])
    assert status == EXIT_UNUSABLE
    assert "does not include a method named 'Nope'" in capsys.readouterr().err


def test_json_output_carries_ghz_field_names(slow_server, vae_proto, capsys) -> None:
    host = slow_server(delay_ms=1)
    flags = [host, "--insecure", "--proto", vae_proto, "--call", SAMPLE, "-d", '{"count": 1}']
    status, report = cli_json(capsys, *flags, "-n", "30", "-c", "3")
    assert status == EXIT_OK
    assert report.keys() >= GHZ_REPORT_FIELDS
    assert report["count"] == 30
    assert report["statusCodeDistribution"] == {"OK": 30}
    assert report["errorDistribution"] == {}
    # Durations are integer nanoseconds, as Go's time.Duration marshals.
    assert isinstance(report["total"], int) and report["total"] > report["slowest"] >= 1_000_000
    assert report["fastest"] <= report["average"] <= report["slowest"]
    percentages = [entry["percentage"] for entry in report["latencyDistribution"]]
    assert percentages == [10, 25, 50, 75, 90, 95, 99, 99.9]
    assert all(set(e) == {"percentage", "latency"} for e in report["latencyDistribution"])
    assert all(set(b) == {"mark", "count", "frequency"} for b in report["histogram"])
    assert sum(bucket["count"] for bucket in report["histogram"]) == 30
    assert len(report["details"]) == 30
    assert set(report["details"][0]) == {"timestamp", "latency", "error", "status"}
    assert report["options"]["call"] == SAMPLE and report["options"]["concurrency"] == 3


def test_summary_has_ghz_shape(slow_server, vae_proto, capsys) -> None:
    host = slow_server(delay_ms=1)
    flags = [host, "--insecure", "--proto", vae_proto, "--call", SAMPLE, "-n", "20", "-c", "2"]
    assert main(flags) == EXIT_OK
    summary = capsys.readouterr().out
    for line in ("Summary:", "  Count:\t20", "  Requests/sec:\t", "Response time histogram:"):
        assert line in summary
    for line in ("Latency distribution:", "  10 % in ", "  99.9 % in ", "  [OK]   20 responses"):
        assert line in summary
    assert "Client CPU:" in summary


@pytest.mark.parametrize(("slo", "status"), [("p50=10ms", EXIT_FAILED), ("p50=5s", EXIT_OK)])
def test_slo_decides_the_exit_status(slow_server, vae_proto, capsys, slo, status) -> None:
    host = slow_server(delay_ms=50)
    flags = [host, "--insecure", "--proto", vae_proto, "--call", SAMPLE, "-n", "8", "-c", "4"]
    assert main([*flags, "--slo", f"p99=10s,{slo}"]) == status
    missed = [line for line in capsys.readouterr().err.splitlines() if "SLO missed" in line]
    assert missed == ([] if status == EXIT_OK else [missed[0]])
    assert all(line.split("SLO missed: ")[1].startswith("p50 = ") for line in missed)


def test_worker_processes_share_the_load_and_report_their_cpu(slow_server, vae_proto) -> None:
    host = slow_server(delay_ms=1)
    report = run(sample_config(host, vae_proto, procs=2, concurrency=4, total=40))
    assert report.procs == 2
    assert report.status_counts == {"OK": 40}
    assert report.cpu_s > 0
    # The two processes' calls are numbered apart, so none is counted twice or left out.
    assert report.count == 40


def test_mutual_tls_with_ghz_flags(slow_server, vae_proto, pki, capsys) -> None:
    files = {name: str(path) for name, path in pki.items()}
    server_tls = (f"--tls-cert={files['server_cert']}", f"--tls-key={files['server_key']}")
    host = slow_server(delay_ms=1, tls_flags=(*server_tls, f"--client-ca={files['ca']}"))
    flags = [host, "--proto", vae_proto, "--call", SAMPLE, "-n", "10", "-c", "2"]
    flags += ["--cacert", files["ca"], "--cname", "localhost", "--connect-timeout", "2s"]
    client = ["--cert", files["client_cert"], "--key", files["client_key"]]
    assert main([*flags, *client]) == EXIT_OK
    assert "[OK]   10 responses" in capsys.readouterr().out
    # Without a client certificate the server refuses the handshake: no run at all.
    assert main(flags) == EXIT_UNUSABLE
    assert "cannot connect" in capsys.readouterr().err
