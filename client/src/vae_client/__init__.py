"""A small Python client of the VAE service, returning numpy arrays.

    from vae_client import VAEClient

    with VAEClient("localhost:50051") as client:
        images = client.sample(64, seed=7).images      # (64, 28, 28) float32 in [0, 1]
        embedding = client.encode(images).mean         # (64, 2)
        morph = client.interpolate(images[0], images[1], 10).images   # (10, 28, 28)
        for chunk in client.sample_stream(10**6, seed=7):             # a dataset, chunk by chunk
            chunk.images                                   # (1024, 28, 28) from chunk.start_index

read_digit and save_grid read and write PNG files; they need Pillow, the `images` extra.
"""

from vae_client._channel import channel_credentials, open_channel
from vae_client._client import (
    DigitVariations,
    Embeddings,
    LatentPath,
    LikelihoodScores,
    ModelInfo,
    Reconstructions,
    SampledDigits,
    VAEClient,
)
from vae_client._images import PillowMissing, read_digit, save_grid
from vae_client._stream import ModelVersionChanged, StreamChunk

__all__ = [
    "DigitVariations",
    "Embeddings",
    "LatentPath",
    "LikelihoodScores",
    "ModelInfo",
    "ModelVersionChanged",
    "PillowMissing",
    "Reconstructions",
    "SampledDigits",
    "StreamChunk",
    "VAEClient",
    "channel_credentials",
    "open_channel",
    "read_digit",
    "save_grid",
]
