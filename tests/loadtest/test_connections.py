"""--connections as in ghz: that many connections, the -c workers dealt out over them in turn.

The slow server counts each connection's calls and the most it had in flight at once, from the
peer address gRPC gives every call (one per TCP connection).
"""

import json

import grpc
import pytest

from loadtest import RunConfig, run
from loadtest.config import ConfigError

SAMPLE = "vae.v1.VAEService.Sample"


def seen_by_the_server(host: str) -> list[dict[str, int]]:
    """Per connection that sent Sample calls: its calls and the most it had in flight."""
    with grpc.insecure_channel(host) as channel:
        answer = channel.unary_unary("/slowserver.Peers/Get")(b"", timeout=10)
    return list(json.loads(answer).values())


def workers_per_connection(concurrency: int, connections: int) -> list[int]:
    """ghz's share: worker k sends over connection k mod `connections`."""
    return [len(range(k, concurrency, connections)) for k in range(connections)]


@pytest.mark.parametrize(
    ("concurrency", "connections", "procs"), [(3, 2, 1), (3, 3, 1), (5, 2, 1), (4, 2, 2)]
)
@pytest.mark.parametrize("rps", [0, 400], ids=["closed loop", "open loop"])
def test_each_connection_carries_its_own_workers_calls(
    slow_server, vae_proto, concurrency, connections, procs, rps
) -> None:
    host = slow_server(delay_ms=20)
    config = RunConfig(
        call=SAMPLE, host=host, proto=vae_proto, insecure=True, data=({"count": 1},),
        concurrency=concurrency, connections=connections, procs=procs, total=40, rps=rps,
    )
    assert run(config).status_counts == {"OK": 40}
    seen = seen_by_the_server(host)
    assert len(seen) == connections
    assert sum(connection["calls"] for connection in seen) == 40
    # A connection never has more calls in flight than workers of its own.
    most_in_flight = sorted(connection["most_in_flight"] for connection in seen)
    workers = sorted(workers_per_connection(concurrency, connections))
    assert all(most <= limit for most, limit in zip(most_in_flight, workers, strict=True))


def test_more_connections_than_workers_are_refused_as_ghz_refuses_them() -> None:
    with pytest.raises(ConfigError, match=r"connections \(4\) cannot be more than concurrency"):
        RunConfig(call=SAMPLE, host="127.0.0.1:1", concurrency=2, connections=4)
