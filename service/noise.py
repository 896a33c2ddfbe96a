"""Standard normal noise for Sample, Encode and Reconstruct, drawn per request before batching,
and the latents of SampleStream's rows.

A seeded request gets exactly `numpy.random.default_rng(seed).standard_normal(shape,
dtype=float32)`, so a caller can reproduce its latents without the server: each seeded request
builds that generator itself, so no state is shared between requests or threads. Unseeded
requests share one generator seeded from the OS; numpy's generators hold a lock while they
draw, so the handler threads can share it.
"""

import secrets

import numpy as np

# SampleStream draws its noise in blocks of this many rows, one generator per block: row i is
# row i % STREAM_BLOCK_ROWS of block i // STREAM_BLOCK_ROWS, so any row is found by drawing one
# block, whatever the chunks and the start index (vae.proto states the recipe).
STREAM_BLOCK_ROWS = 1024


class NoiseSource:
    """Draws float32 standard normal arrays; safe to use from several threads."""

    def __init__(self) -> None:
        self._shared = np.random.default_rng()

    def normal(self, rows: int, cols: int, seed: int | None = None) -> np.ndarray:
        """A (rows, cols) float32 standard normal array; repeatable when `seed` is given."""
        generator = self._shared if seed is None else np.random.default_rng(seed)
        return generator.standard_normal((rows, cols), dtype=np.float32)


def stream_latents(
    seed: int, first_row: int, rows: int, latent_dim: int, temperature: float
) -> np.ndarray:
    """Rows first_row .. first_row + rows - 1 of a SampleStream dataset's latents, float32
    (rows, latent_dim): row i is
    `default_rng([seed, i // 1024]).standard_normal((1024, latent_dim), dtype=float32)[i % 1024]`
    times `temperature`, in float32."""
    end = first_row + rows
    parts = []
    for block in range(first_row // STREAM_BLOCK_ROWS, (end - 1) // STREAM_BLOCK_ROWS + 1):
        block_start = block * STREAM_BLOCK_ROWS
        noise = np.random.default_rng([seed, block]).standard_normal(
            (STREAM_BLOCK_ROWS, latent_dim), dtype=np.float32
        )
        parts.append(noise[max(first_row, block_start) - block_start:end - block_start])
    latents = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return latents * np.float32(temperature)


def fresh_stream_seed() -> int:
    """A seed for a stream whose caller gave none: 64 bits from the OS's entropy."""
    return secrets.randbits(64)
