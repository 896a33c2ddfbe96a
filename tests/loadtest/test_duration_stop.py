"""The end of a timed run, as ghz's `duration-stop` says, against a deliberately slow server.

The server answers each call only after longer than the run's duration, so every call sent is
certainly still in flight when the duration ends, however fast or slow this machine is: the
closed loop's workers each have their first call out, the open loop its one arrival (due at the
start). What the report then shows depends on `duration-stop` alone.
"""

import json

import pytest

from loadtest.cli import EXIT_FAILED, EXIT_OK, main

DURATION_S = 1
# The server's delay when the run is not meant to wait for it: a report within it was cut.
NEVER_ANSWERED_MS = 10_000
# The closed loop: one call in flight per worker. The open loop: one arrival, at the start.
LOADS = {"closed-loop": ({"concurrency": 3}, 3), "open-loop": ({"rps": 1}, 1)}
# ghz's error for a call whose connection it closed, less the socket addresses it also names.
CUT = (
    "rpc error: code = Unavailable desc = error reading from server: "
    "use of closed network connection"
)


def scenario_file(tmp_path, host: str, proto: str, stop: str, load: dict) -> str:
    """A ghz config of a timed run, as a scenario file would be."""
    config = {
        "call": "vae.v1.VAEService.Sample",
        "host": host,
        "proto": proto,
        "insecure": True,
        "duration": f"{DURATION_S}s",
        "duration-stop": stop,
        **load,
        "timeout": "20s",
        "data": {"count": 1},
    }
    path = tmp_path / f"{stop}.json"
    path.write_text(json.dumps(config))
    return str(path)


def run_json(capsys, path: str) -> tuple[int, dict]:
    status = main(["--config", path, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("load", "in_flight"), LOADS.values(), ids=LOADS)
def test_close_reports_each_cut_call_as_ghz_does(
    slow_server, vae_proto, tmp_path, capsys, load, in_flight
) -> None:
    host = slow_server(delay_ms=NEVER_ANSWERED_MS)
    status, report = run_json(capsys, scenario_file(tmp_path, host, vae_proto, "close", load))
    assert report["statusCodeDistribution"] == {"Unavailable": in_flight}
    assert report["errorDistribution"] == {CUT: in_flight}
    assert [detail["status"] for detail in report["details"]] == ["Unavailable"] * in_flight
    assert report["endReason"] == "timeout"
    # Cut when the duration ended, not answered: the run did not wait for the server.
    assert DURATION_S * 1e9 <= report["total"] < NEVER_ANSWERED_MS * 1e6
    assert status == EXIT_FAILED


@pytest.mark.parametrize(("load", "in_flight"), LOADS.values(), ids=LOADS)
def test_wait_lets_the_calls_in_flight_finish_and_reports_them(
    slow_server, vae_proto, tmp_path, capsys, load, in_flight
) -> None:
    delay_s = 2 * DURATION_S
    host = slow_server(delay_ms=delay_s * 1000)
    status, report = run_json(capsys, scenario_file(tmp_path, host, vae_proto, "wait", load))
    assert report["statusCodeDistribution"] == {"OK": in_flight}
    assert report["errorDistribution"] == {}
    assert all(detail["latency"] >= delay_s * 1e9 for detail in report["details"])
    assert report["endReason"] == "timeout"
    assert report["total"] >= delay_s * 1e9
    assert status == EXIT_OK


@pytest.mark.parametrize("load", [load for load, _ in LOADS.values()], ids=LOADS)
def test_ignore_cuts_the_calls_in_flight_and_leaves_them_out(
    slow_server, vae_proto, tmp_path, capsys, load
) -> None:
    host = slow_server(delay_ms=NEVER_ANSWERED_MS)
    status, report = run_json(capsys, scenario_file(tmp_path, host, vae_proto, "ignore", load))
    assert report["count"] == 0
    assert report["statusCodeDistribution"] == {}
    assert report["errorDistribution"] == {}
    assert report["endReason"] == "timeout"
    assert DURATION_S * 1e9 <= report["total"] < NEVER_ANSWERED_MS * 1e6
    assert status == EXIT_OK
