"""The benchmark's latent-space scenarios: the rows each call is counted as running are the rows
the service really runs through each graph."""

import grpc
import pytest
from vae.v1 import vae_pb2

from bench.scenarios import SCENARIOS
from loadtest.payload import serialize_requests

SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]
LATENT = [scenario for scenario in SCENARIOS if scenario.latent]


def test_each_latent_rpc_is_benchmarked_alone_and_under_32_callers() -> None:
    assert sorted((s.method, s.concurrency) for s in LATENT) == [
        (method, c) for method in ("Interpolate", "Score", "Variations") for c in (1, 32)
    ]
    # Its rows are both graphs' together; the floors, which cannot run these RPCs, are not
    # set against them.
    assert all(s.rows == s.encoder_rows + s.decoder_rows for s in LATENT)
    assert not any(s.latent for s in SCENARIOS if s.method in ("Sample", "Encode"))


@pytest.mark.parametrize("scenario", LATENT, ids=lambda scenario: scenario.name)
def test_a_call_runs_the_rows_it_is_counted_for(vae_server, scenario) -> None:
    method = SERVICE.methods_by_name[scenario.method]
    (request,) = serialize_requests(method, [scenario.data()])

    def rows_run(graph: str) -> float:
        return vae_server.metric("vae_batch_size_sum", graph=graph)

    before = rows_run("encoder"), rows_run("decoder")
    with grpc.insecure_channel(vae_server.target) as channel:
        channel.unary_unary(f"/vae.v1.VAEService/{scenario.method}")(request, timeout=10)
    assert rows_run("encoder") - before[0] == scenario.encoder_rows
    assert rows_run("decoder") - before[1] == scenario.decoder_rows
