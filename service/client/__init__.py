"""A small Python client of the VAE service, returning numpy arrays.

    from service.client import VAEClient

    with VAEClient("localhost:50051") as client:
        images = client.sample(64, seed=7).images      # (64, 28, 28) float32 in [0, 1]
        embedding = client.encode(images).mean         # (64, 2)
"""

from service.client._channel import channel_credentials, open_channel
from service.client._client import Encoding, ModelInfo, Reconstruction, Samples, VAEClient

__all__ = [
    "Encoding",
    "ModelInfo",
    "Reconstruction",
    "Samples",
    "VAEClient",
    "channel_credentials",
    "open_channel",
]
