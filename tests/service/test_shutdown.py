"""SIGTERM: in-flight requests finish, new ones are refused, the process exits 0."""

import signal
import threading
import time

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vae_client import VAEClient

pytestmark = pytest.mark.timeout(120)


def started(metrics_text: str, method: str) -> float:
    """grpc_server_started_total of one method."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "grpc_server_started"
        for sample in family.samples
        if sample.labels.get("grpc_method") == method
    )


def test_sigterm_lets_admitted_requests_finish_then_exits_0(start_vae_server, heldout) -> None:
    server = start_vae_server(VAE_GRACE_SECONDS="30", VAE_MAX_QUEUE="65536")
    images = np.tile(heldout, (4, 1))  # 3996 rows: a request that takes a while
    with VAEClient(server.target) as client:
        expected = client.reconstruct(images[:8]).images
    results: list[object] = []

    def call() -> None:
        with VAEClient(server.target) as client:
            try:
                results.append(client.reconstruct(images))
            except grpc.RpcError as error:
                results.append(error)

    callers = [threading.Thread(target=call) for _ in range(6)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 30
    while started(server.scrape(), "Reconstruct") < 7:  # every call is in its handler
        assert time.monotonic() < deadline, "the requests never started"
        time.sleep(0.005)
    server.signal(signal.SIGTERM)
    server.wait_for_log("draining", timeout=10)
    with pytest.raises(grpc.RpcError) as refused, VAEClient(server.target) as late:
        late.sample(1)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for caller in callers:
        caller.join(timeout=60)
    assert server.wait_exit() == 0
    assert len(results) == 6
    for result in results:
        assert not isinstance(result, grpc.RpcError), result
        np.testing.assert_array_equal(result.images[:8], expected)
    messages = [record["message"] for record in server.records()]
    assert messages.index("draining") < messages.index("stopped")
