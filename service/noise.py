"""Standard normal noise for Sample, Encode and Reconstruct, drawn per request before batching.

A seeded request gets exactly `numpy.random.default_rng(seed).standard_normal(shape,
dtype=float32)`, so a caller can reproduce its latents without the server. Building a new
PCG64 costs about 10 µs, more than the rest of a small request's own work, so one generator is
re-seeded in place with the state PCG64 would derive from the seed (same numbers), and the
states of recently used seeds are cached, since callers that want repeatable output tend to
reuse their seeds. Unseeded requests share one generator seeded from the OS.

Requests are served on many threads: each thread re-seeds a generator of its own, and the
shared one serializes its draws (numpy's generators hold a lock while they draw).
"""

import functools
import threading
from typing import Any

import numpy as np

_MASK_128 = (1 << 128) - 1
# PCG64's 128-bit LCG multiplier (numpy's PCG_DEFAULT_MULTIPLIER_128).
_PCG_MULTIPLIER = (2549297995355413924 << 64) + 4865540595714422341


class NoiseSource:
    """Draws float32 standard normal arrays; safe to use from several threads."""

    def __init__(self) -> None:
        self._shared = np.random.default_rng()
        self._per_thread = threading.local()

    def normal(self, rows: int, cols: int, seed: int | None = None) -> np.ndarray:
        """A (rows, cols) float32 standard normal array; repeatable when `seed` is given."""
        if seed is None:
            return self._shared.standard_normal((rows, cols), dtype=np.float32)
        try:
            seeded: np.random.Generator = self._per_thread.generator
        except AttributeError:
            seeded = self._per_thread.generator = np.random.Generator(np.random.PCG64(0))
        seeded.bit_generator.state = _pcg64_state(seed)
        return seeded.standard_normal((rows, cols), dtype=np.float32)


@functools.lru_cache(maxsize=4096)
def _pcg64_state(seed: int) -> Any:
    """The state `numpy.random.PCG64(seed)` starts in (pcg_setseq_128_srandom_r).

    The returned dict is shared through the cache; the `state` setter copies it.
    """
    words = np.random.SeedSequence(seed).generate_state(4, np.uint64).tolist()
    init_state = (words[0] << 64) | words[1]
    increment = (((words[2] << 64) | words[3]) << 1 | 1) & _MASK_128
    # From state 0: one LCG step (which leaves the increment), add the seed, one more step.
    state = (increment + init_state) & _MASK_128
    state = (state * _PCG_MULTIPLIER + increment) & _MASK_128
    return {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": increment},
        "has_uint32": 0,
        "uinteger": 0,
    }
