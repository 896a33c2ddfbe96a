"""VAEClient's `connections`: each a TCP connection of its own to the server, taken in turn.

A server's worker processes (and the pods behind a Service) share the load per connection, so a
client that wants to reach several of them must open several connections; gRPC would otherwise
let the channels of one process share one. The connections are counted at both ends: sockets
of the server (and of any process it started) on its gRPC port whose peer is a socket of this
process.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from vae_client import VAEClient, open_channel

pytestmark = pytest.mark.timeout(120)


def connections_from_here(server) -> set[tuple[str, int]]:
    """This process's established connections to `server`, as the server sees them."""
    port = int(server.target.rsplit(":", 1)[1])
    ours = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    }
    serving = psutil.Process(server.process.pid)
    theirs = {
        (c.raddr.ip, c.raddr.port)
        for process in (serving, *serving.children(recursive=True))
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr
    }
    return ours & theirs


def test_each_connection_is_opened_by_the_call_whose_turn_it_is(vae_server) -> None:
    before = connections_from_here(vae_server)
    opened = []
    with VAEClient(vae_server.target, connections=3) as client:
        for _ in range(5):
            client.info()
            opened.append(len(connections_from_here(vae_server) - before))
    # A channel connects on its first call: calls 1 to 3 each take a new connection, calls 4
    # and 5 come back to the first two.
    assert opened == [1, 2, 3, 3, 3]


def test_one_connection_by_default_however_many_calls(vae_server) -> None:
    before = connections_from_here(vae_server)
    with VAEClient(vae_server.target) as client:
        for _ in range(4):
            client.sample(1, seed=7)
        assert len(connections_from_here(vae_server) - before) == 1


def test_threads_share_a_client_and_its_connections(vae_server) -> None:
    before = connections_from_here(vae_server)
    with VAEClient(vae_server.target, connections=4) as client:
        expected = client.sample(2, seed=11).images
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: client.sample(2, seed=11).images, range(40)))
        assert len(connections_from_here(vae_server) - before) == 4
    for images in results:
        assert images.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "settings",
    [
        {"connections": 0},
        {"connections": 2, "channel": True},
        {"server_name": "x", "channel": True},
    ],
    ids=["no-connection", "channel-and-connections", "channel-and-tls-settings"],
)
def test_settings_that_cannot_hold_are_refused(vae_server, settings) -> None:
    if settings.pop("channel", False):
        settings["channel"] = open_channel(vae_server.target)
    with pytest.raises(ValueError):
        VAEClient(vae_server.target, **settings)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vae_client", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_command_takes_a_number_of_connections(vae_server) -> None:
    result = cli("--target", vae_server.target, "--connections", "2", "info")
    assert result.returncode == 0, result.stderr
    refused = cli("--target", vae_server.target, "--connections", "0", "info")
    assert refused.returncode == 2
    assert "--connections: must be at least 1, not 0" in refused.stderr
