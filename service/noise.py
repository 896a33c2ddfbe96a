"""Standard normal noise for Sample, Encode and Reconstruct, drawn per request before batching.

A seeded request gets exactly `numpy.random.default_rng(seed).standard_normal(shape,
dtype=float32)`, so a caller can reproduce its latents without the server: each seeded request
builds that generator itself, so no state is shared between requests or threads. Unseeded
requests share one generator seeded from the OS; numpy's generators hold a lock while they
draw, so the handler threads can share it.
"""

import numpy as np


class NoiseSource:
    """Draws float32 standard normal arrays; safe to use from several threads."""

    def __init__(self) -> None:
        self._shared = np.random.default_rng()

    def normal(self, rows: int, cols: int, seed: int | None = None) -> np.ndarray:
        """A (rows, cols) float32 standard normal array; repeatable when `seed` is given."""
        generator = self._shared if seed is None else np.random.default_rng(seed)
        return generator.standard_normal((rows, cols), dtype=np.float32)
