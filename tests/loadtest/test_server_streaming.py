"""Server-streaming calls as ghz makes them, against the slow server's SampleStream.

One call sends the request and reads every message to the stream's end; it counts once, by the
status the stream ended with, and its latency runs to that end. The slow server sends each
message `DELAY_MS` after the last, so a stream's length has a floor however fast this machine is.
"""

import json

import grpc

from loadtest import RunConfig, run
from loadtest.cli import EXIT_FAILED, EXIT_OK, main

STREAM = "vae.v1.VAEService.SampleStream"
DELAY_MS = 20
MESSAGES = 5


def stream_flags(host: str, proto: str, *flags: str) -> list[str]:
    return [host, "--insecure", "--proto", proto, "--call", STREAM, "-d", '{"count": 1}', *flags]


def cli_json(capsys, *flags: str) -> tuple[int, dict]:
    status = main([*flags, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


def calls_seen_by_the_server(host: str) -> int:
    with grpc.insecure_channel(host) as channel:
        answer = channel.unary_unary("/slowserver.Peers/Get")(b"", timeout=10)
    return sum(peer["calls"] for peer in json.loads(answer).values())


def latencies_s(report: dict) -> list[float]:
    return [detail["latency"] / 1e9 for detail in report["details"]]


def test_one_call_reads_the_whole_stream_and_counts_once(slow_server, vae_proto) -> None:
    host = slow_server(delay_ms=DELAY_MS, stream_messages=MESSAGES)
    config = RunConfig(call=STREAM, host=host, proto=vae_proto, insecure=True,
                       data=({"count": 1},), concurrency=2, total=6)
    report = run(config)
    assert report.count == 6 and report.status_counts == {"OK": 6}
    assert calls_seen_by_the_server(host) == 6
    # Until the last message: one message alone comes after DELAY_MS.
    assert report.fastest_s >= MESSAGES * DELAY_MS / 1000


def test_a_stream_that_fails_midway_counts_by_its_status(slow_server, vae_proto, capsys) -> None:
    host = slow_server(delay_ms=DELAY_MS, stream_messages=MESSAGES, stream_abort_after=2)
    status, report = cli_json(capsys, *stream_flags(host, vae_proto, "-n", "4", "-c", "2"))
    assert status == EXIT_FAILED
    assert report["count"] == 4
    assert report["statusCodeDistribution"] == {"Unavailable": 4}
    assert report["errorDistribution"] == {
        "rpc error: code = Unavailable desc = the server is shutting down": 4
    }
    # Its latency runs to the failure, after the two messages that came before it.
    assert min(latencies_s(report)) >= 2 * DELAY_MS / 1000
    # As in ghz, the statistics other than the average are over the OK calls: none here.
    assert report["latencyDistribution"] == []


def test_stream_call_count_cancels_each_stream_after_that_many_messages(
    slow_server, vae_proto, capsys
) -> None:
    host = slow_server(delay_ms=DELAY_MS, stream_messages=MESSAGES)
    flags = stream_flags(host, vae_proto, "-n", "4", "-c", "2", "--stream-call-count", "2")
    status, report = cli_json(capsys, *flags)
    assert status == EXIT_FAILED  # ghz counts a stream it cancelled as Canceled, not OK
    assert report["statusCodeDistribution"] == {"Canceled": 4}
    assert report["errorDistribution"] == {"rpc error: code = Canceled desc = context canceled": 4}
    assert min(latencies_s(report)) >= 2 * DELAY_MS / 1000
    assert report["latencyDistribution"] == []
    # --count-errors puts them in the statistics.
    _, counted = cli_json(capsys, *flags, "--count-errors")
    assert counted["statusCodeDistribution"] == {"Canceled": 4}
    assert len(counted["latencyDistribution"]) == 8
    assert counted["fastest"] >= 2 * DELAY_MS * 1_000_000


def test_stream_call_duration_cancels_at_the_first_message_after_it(
    slow_server, vae_proto, capsys
) -> None:
    # A stream of 2 s, cut at its first message 150 ms or more after it began.
    host = slow_server(delay_ms=100, stream_messages=20)
    flags = stream_flags(host, vae_proto, "-n", "2", "-c", "2", "--stream-call-duration", "150ms")
    status, report = cli_json(capsys, *flags, "--count-errors")
    assert status == EXIT_FAILED
    assert report["statusCodeDistribution"] == {"Canceled": 2}
    assert min(latencies_s(report)) >= 0.15


def test_a_stream_limit_leaves_shorter_streams_alone(slow_server, vae_proto, capsys) -> None:
    host = slow_server(delay_ms=DELAY_MS, stream_messages=MESSAGES)
    flags = stream_flags(host, vae_proto, "-n", "4", "-c", "2", "--stream-call-count", "10")
    status, report = cli_json(capsys, *flags)
    assert status == EXIT_OK
    assert report["statusCodeDistribution"] == {"OK": 4}


def test_streams_in_flight_when_a_timed_run_closes_are_cut_as_ghz_cuts_them(
    slow_server, vae_proto, capsys
) -> None:
    # The first message would come after 10 s: both streams are in flight at the end of 1 s.
    host = slow_server(delay_ms=10_000)
    flags = stream_flags(host, vae_proto, "-c", "2", "-z", "1s", "--duration-stop", "close")
    status, report = cli_json(capsys, *flags)
    assert status == EXIT_FAILED
    assert report["statusCodeDistribution"] == {"Unavailable": 2}
    assert max(latencies_s(report)) < 10
