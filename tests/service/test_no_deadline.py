"""A call without a deadline: it waits as long as its rows need, however it runs.

grpcio reports such a call as one whose deadline is in its infinite future; requests large
enough to queue for the batcher's worker (more rows than run inline) must still be answered.
"""

import grpc
import numpy as np
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.batching.policy import BatchPolicySettings
from service.tensors import to_proto

pytestmark = pytest.mark.timeout(120)

# More rows than a request may run inline on its handler thread, so each of these requests
# waits for the batcher's worker.
QUEUED_ROWS = 4 * BatchPolicySettings().inline_max_rows


@pytest.fixture(scope="module")
def stub(vae_server):
    with grpc.insecure_channel(vae_server.target) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


def test_a_sample_without_a_deadline_is_answered(stub):
    response = stub.Sample(vae_pb2.SampleRequest(count=QUEUED_ROWS, seed=1))
    assert list(response.images.shape) == [QUEUED_ROWS, 28, 28]


def test_a_score_without_a_deadline_is_answered(stub):
    images = np.full((QUEUED_ROWS, 784), 0.5, np.float32)
    response = stub.Score(vae_pb2.ScoreRequest(images=to_proto(images), samples=2, seed=1))
    assert len(response.elbo) == len(response.log_likelihood) == QUEUED_ROWS
