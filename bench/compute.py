"""The compute limit: onnxruntime in this process on the served graphs, no gRPC in the way."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.scenarios import Scenario

BATCH_SIZES = (1, 64, 1024, 4096)
MIN_SECONDS = 1.0


def make_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runs_per_second(run: Callable[[], object]) -> float:
    """Calls per second of ``run``, repeated for at least MIN_SECONDS after one untimed call."""
    run()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < MIN_SECONDS:
        run()
        runs += 1
    return runs / elapsed


def rows_per_second(session: ort.InferenceSession, feed_name: str, inputs: np.ndarray) -> float:
    """Rows per second of repeated runs on ``inputs``, timed for at least MIN_SECONDS."""
    return len(inputs) * runs_per_second(lambda: session.run(None, {feed_name: inputs}))


def measure(version_dir: Path, threads: int) -> dict[str, dict[int, float]]:
    """Samples per second of the decoder (what Sample runs) and the encoder, per batch size."""
    rng = np.random.default_rng(0)
    decoder = make_session(version_dir / "decoder.onnx", threads)
    encoder = make_session(version_dir / "encoder.onnx", threads)
    results: dict[str, dict[int, float]] = {"decoder": {}, "encoder": {}}
    for batch in BATCH_SIZES:
        latents = rng.standard_normal((batch, 2), dtype=np.float32)
        images = rng.random((batch, 784), dtype=np.float32)
        results["decoder"][batch] = rows_per_second(decoder, "latents", latents)
        results["encoder"][batch] = rows_per_second(encoder, "images", images)
        print(f"    onnxruntime batch {batch:5d}: decoder {results['decoder'][batch]:12,.0f} "
              f"rows/s, encoder {results['encoder'][batch]:12,.0f} rows/s", flush=True)
    return results


def measure_latent(version_dir: Path, threads: int,
                   scenarios: Sequence[Scenario]) -> dict[str, float]:
    """Rows per second of each latent-space scenario's rows, by scenario name: one encoder run
    on the digits its calls send, then one decoder run on as many latent points as they decode
    (their posterior means, repeated).

    A scenario's `concurrency` calls run as one batch of each graph: the most the service's
    batchers can join, so at one caller these are one call's own batch shapes and at 32 the
    ceiling of 32 callers' rows batched together.
    """
    decoder = make_session(version_dir / "decoder.onnx", threads)
    encoder = make_session(version_dir / "encoder.onnx", threads)
    results = {}
    for scenario in scenarios:
        calls = scenario.concurrency
        images = np.tile(scenario.encoder_images() / np.float32(255), (calls, 1))
        (mean, _log_variance) = encoder.run(None, {"images": images})
        latents = np.resize(mean, (calls * scenario.decoder_rows, mean.shape[1]))

        def encode_then_decode(images: np.ndarray = images, latents: np.ndarray = latents) -> None:
            encoder.run(None, {"images": images})
            decoder.run(None, {"latents": latents})

        results[scenario.name] = calls * scenario.rows * runs_per_second(encode_then_decode)
        print(f"    onnxruntime {scenario.name:24s} encoder {len(images):4d} rows, then decoder "
              f"{len(latents):4d}: {results[scenario.name]:10,.0f} rows/s", flush=True)
    return results
