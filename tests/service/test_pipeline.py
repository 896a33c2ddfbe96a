"""VAEPipeline in process, without gRPC: real batchers, the bundled model.

Each operation gives rows of the right shapes, equal to running the graphs directly; seeded
results repeat bitwise and follow numpy's generator; a request whose deadline has passed, or
passes while it waits behind a running batch, is never run, and neither is one whose caller
has gone.
"""

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher, BatchPolicySettings
from service.errors import CallerGone, DeadlineExpired
from service.instrumentation import InFlightRequests
from service.model import Model, ModelHolder, load_model, newest_version_dir
from service.pipeline import VAEPipeline

pytestmark = pytest.mark.timeout(60)

MAX_BATCH_SIZE = 64
STREAM_PIECE_ROWS = 16
# More rows than a small request that finds the batcher idle may run on its own thread
# (BatchPolicySettings.inline_max_rows): a request this large always goes through the queue.
QUEUED_ROWS = 2 * BatchPolicySettings().inline_max_rows


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Model:
    return load_model(newest_version_dir(model_dir), 1)


@pytest.fixture
def batchers() -> Iterator[dict[str, Batcher]]:
    """A started batcher per graph, closed after the test."""
    batchers = {
        graph: Batcher(
            graph, max_batch_size=MAX_BATCH_SIZE, max_queue_rows=1024,
            policy=BatchPolicySettings(), load=InFlightRequests(),
        )
        for graph in ("encoder", "decoder")
    }
    for batcher in batchers.values():
        batcher.start()
    yield batchers
    for batcher in batchers.values():
        batcher.close()


@pytest.fixture
def pipeline(model: Model, batchers: dict[str, Batcher]) -> VAEPipeline:
    return VAEPipeline(
        ModelHolder(model), batchers["encoder"], batchers["decoder"], max_request_rows=256,
        stream_piece_rows=STREAM_PIECE_ROWS,
    )


@pytest.fixture
def digits(heldout: np.ndarray) -> np.ndarray:
    """Five held-out digits as (5, 784) float32 in [0, 1]."""
    return (heldout[:5] / 255).astype(np.float32)


def noise(seed: int, rows: int) -> np.ndarray:
    """What a seeded request draws: numpy's generator for that seed, float32 (rows, 2)."""
    return np.random.default_rng(seed).standard_normal((rows, 2), dtype=np.float32)


def test_each_operation_gives_rows_of_the_right_shapes(pipeline, model, digits) -> None:
    images, latents = pipeline.sample(model, 5, seed=None, temperature=1.0, deadline=None)
    assert images.shape == (5, 784) and images.dtype == np.float32 and latents.shape == (5, 2)
    assert images.min() >= 0 and images.max() <= 1
    encoding = pipeline.encode(model, digits, seed=None, deadline=None)
    assert encoding.mean.shape == encoding.log_variance.shape == (5, 2)
    assert encoding.latents is None
    assert pipeline.encode(model, digits, seed=1, deadline=None).latents.shape == (5, 2)
    reconstruction = pipeline.reconstruct(model, digits, seed=None, deadline=None)
    assert reconstruction.images.shape == (5, 784) and reconstruction.errors.shape == (5,)
    assert np.isfinite(reconstruction.errors).all() and (reconstruction.errors > 0).all()
    assert pipeline.decode(model, latents[:3], deadline=None).shape == (3, 784)


def test_the_results_are_the_graphs_own_even_for_requests_larger_than_a_batch(
    pipeline, model, heldout
) -> None:
    rows = 2 * MAX_BATCH_SIZE + 5
    latents = noise(0, rows) * 2
    (expected,) = model.decoder.run(latents)
    np.testing.assert_array_equal(pipeline.decode(model, latents, deadline=None), expected)
    images = (heldout[:rows] / 255).astype(np.float32)
    mean, log_variance = model.encoder.run(images)
    encoding = pipeline.encode(model, images, seed=None, deadline=None)
    np.testing.assert_array_equal(encoding.mean, mean)
    np.testing.assert_array_equal(encoding.log_variance, log_variance)
    # Without a seed, a reconstruction decodes the posterior mean.
    (decoded_mean,) = model.decoder.run(mean)
    reconstruction = pipeline.reconstruct(model, images, seed=None, deadline=None)
    np.testing.assert_array_equal(reconstruction.images, decoded_mean)


def test_seeded_results_repeat_bitwise_and_draw_numpys_numbers(pipeline, model, digits) -> None:
    images, latents = pipeline.sample(model, 4, seed=7, temperature=0.5, deadline=None)
    again, latents_again = pipeline.sample(model, 4, seed=7, temperature=0.5, deadline=None)
    np.testing.assert_array_equal(latents, noise(7, 4) * 0.5)
    assert images.tobytes() == again.tobytes() and latents.tobytes() == latents_again.tobytes()
    other, _ = pipeline.sample(model, 4, seed=8, temperature=0.5, deadline=None)
    assert not np.array_equal(images, other)

    encoding = pipeline.encode(model, digits, seed=3, deadline=None)
    expected = encoding.mean + np.exp(0.5 * encoding.log_variance) * noise(3, 5)
    np.testing.assert_array_equal(encoding.latents, expected)
    assert pipeline.encode(model, digits, seed=3, deadline=None).latents.tobytes() == (
        encoding.latents.tobytes()
    )

    first = pipeline.reconstruct(model, digits, seed=5, deadline=None)
    second = pipeline.reconstruct(model, digits, seed=5, deadline=None)
    assert first.images.tobytes() == second.images.tobytes()
    assert first.errors.tobytes() == second.errors.tobytes()


class HeldGraph:
    """A graph that records the rows of each run, and holds each run until released."""

    def __init__(self, graph) -> None:
        self._graph = graph
        self.runs: list[int] = []
        self.running = threading.Event()
        self.released = threading.Event()

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        self.runs.append(len(inputs))
        self.running.set()
        assert self.released.wait(30), "never released"
        return self._graph.run(inputs)


def held(model: Model) -> tuple[Model, HeldGraph, HeldGraph]:
    """`model` with both graphs held; the model and its encoder and decoder."""
    encoder, decoder = HeldGraph(model.encoder), HeldGraph(model.decoder)
    return dataclasses.replace(model, encoder=encoder, decoder=decoder), encoder, decoder


def test_a_stream_chunk_joins_the_decoders_queue_piece_by_piece_and_keeps_its_rows(
    pipeline, model
) -> None:
    model, _, decoder = held(model)
    decoder.released.set()
    chunk = pipeline.sample_rows(model, seed=9, temperature=1.0, first_row=3000, rows=40,
                                 deadline=None)
    # One piece after the other: each run holds one piece, never more.
    assert decoder.runs == [16, 16, 8]
    (whole,) = model.decoder.run(chunk.latents)
    np.testing.assert_array_equal(chunk.images, whole)


@pytest.mark.parametrize("rows", [1, QUEUED_ROWS], ids=["idle server", "queued"])
def test_a_request_whose_deadline_has_passed_is_never_run(pipeline, model, rows) -> None:
    model, encoder, decoder = held(model)
    encoder.released.set()
    decoder.released.set()
    images = np.full((rows, 784), 0.5, np.float32)
    latents = np.zeros((rows, 2), np.float32)
    operations = {
        "sample": lambda deadline: pipeline.sample(model, rows, 1, 1.0, deadline),
        "encode": lambda deadline: pipeline.encode(model, images, 1, deadline),
        "reconstruct": lambda deadline: pipeline.reconstruct(model, images, 1, deadline),
        "decode": lambda deadline: pipeline.decode(model, latents, deadline),
    }
    for name, operation in operations.items():
        with pytest.raises(DeadlineExpired):
            operation(time.monotonic() - 1)
        assert encoder.runs == decoder.runs == [], name


def test_a_request_is_dropped_unrun_when_its_deadline_passes_or_its_caller_leaves_in_the_queue(
    pipeline, model, batchers
) -> None:
    model, _, decoder = held(model)
    running: list[np.ndarray] = []
    first = threading.Thread(target=lambda: running.append(
        pipeline.decode(model, np.zeros((QUEUED_ROWS, 2), np.float32), deadline=None)))
    first.start()
    assert decoder.running.wait(30)
    # The worker is held in the first run: whatever queues now waits however fast the machine.
    with pytest.raises(DeadlineExpired, match="not run"):
        pipeline.decode(model, np.zeros((1, 2), np.float32), deadline=time.monotonic() + 0.05)
    gone: list[BaseException] = []

    def call_and_leave() -> None:
        try:
            pipeline.decode(model, np.ones((2, 2), np.float32), None, is_active=lambda: False)
        except CallerGone as exc:
            gone.append(exc)

    leaver = threading.Thread(target=call_and_leave)
    leaver.start()
    deadline = time.monotonic() + 30
    while batchers["decoder"].queued_rows < 2:  # the leaver's rows are queued
        assert time.monotonic() < deadline, "the request never queued"
        time.sleep(0.001)
    decoder.released.set()
    first.join(30)
    leaver.join(30)
    assert running[0].shape == (QUEUED_ROWS, 784)
    assert len(gone) == 1
    assert decoder.runs == [QUEUED_ROWS]
