"""The compute limit: onnxruntime in this process on the served graphs, no gRPC in the way."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

BATCH_SIZES = (1, 64, 1024, 4096)
MIN_SECONDS = 1.0


def make_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rows_per_second(session: ort.InferenceSession, feed_name: str, inputs: np.ndarray) -> float:
    """Rows per second of repeated runs on ``inputs``, timed for at least MIN_SECONDS."""
    session.run(None, {feed_name: inputs})
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < MIN_SECONDS:
        session.run(None, {feed_name: inputs})
        runs += 1
    return runs * len(inputs) / elapsed


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
