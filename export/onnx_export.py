"""Write the trained VAE as two ONNX graphs with dynamic batch, and check them against torch.

encoder.onnx: images float32 [N, 784] -> mean, log_variance float32 [N, latent_dim]
decoder.onnx: latents float32 [N, latent_dim] -> images float32 [N, 784] in [0, 1]
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.model import VAE

OPSET = 21
PARITY_ROWS = 1000
PARITY_TOLERANCE = 1e-5
DYNAMIC_BATCH_SIZES = (1, 4096)

ENCODER_IO = {
    "inputs": {"images": [-1, 784]},
    "outputs": {"mean": [-1, 2], "log_variance": [-1, 2]},
}
DECODER_IO = {"inputs": {"latents": [-1, 2]}, "outputs": {"images": [-1, 784]}}


class ExportError(Exception):
    """An exported graph failed a check."""


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute difference between onnxruntime and torch on held-out images."""

    rows: int
    encoder_max_abs_diff: float
    decoder_max_abs_diff: float


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_graphs(model: VAE, version_dir: Path) -> tuple[Path, Path]:
    """Export the encoder and decoder into ``version_dir``; returns their paths."""
    # torch's exporter logs every pass at WARNING; its progress lines are what we want to see.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    model.eval()
    version_dir.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    latent_dim = model.sizes.latent_dim
    encoder_path, decoder_path = version_dir / "encoder.onnx", version_dir / "decoder.onnx"
    torch.onnx.export(
        model.encoder, (torch.rand(3, model.sizes.image_pixels),), encoder_path,
        input_names=["images"], output_names=["mean", "log_variance"],
        dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
    )
    torch.onnx.export(
        model.decoder, (torch.randn(3, latent_dim),), decoder_path,
        input_names=["latents"], output_names=["images"],
        dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
    )
    return encoder_path, decoder_path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_graphs(model: VAE, encoder_path: Path, decoder_path: Path,
                 held_out_images: np.ndarray) -> ParityReport:
    """onnx.checker, torch parity on held-out rows, and both ends of the dynamic batch axis."""
    for path in (encoder_path, decoder_path):
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, OSError,
                ValueError) as error:
            raise ExportError(f"{path} is not a valid ONNX graph: {error}") from error
    encoder, decoder = session(encoder_path), session(decoder_path)

    images = held_out_images[:PARITY_ROWS].astype(np.float32)
    with torch.no_grad():
        torch_mean, torch_log_variance = model.encoder(torch.from_numpy(images))
        torch_decoded = model.decoder(torch_mean).numpy()
    mean, log_variance = encoder.run(["mean", "log_variance"], {"images": images})
    (decoded,) = decoder.run(["images"], {"latents": torch_mean.numpy()})
    report = ParityReport(
        rows=len(images),
        encoder_max_abs_diff=float(max(np.abs(mean - torch_mean.numpy()).max(),
                                       np.abs(log_variance - torch_log_variance.numpy()).max())),
        decoder_max_abs_diff=float(np.abs(decoded - torch_decoded).max()),
    )
    worst = max(report.encoder_max_abs_diff, report.decoder_max_abs_diff)
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from torch by {worst:.3g} > {PARITY_TOLERANCE}")

    rng = np.random.default_rng(0)
    for rows in DYNAMIC_BATCH_SIZES:
        batch_images = rng.random((rows, images.shape[1]), dtype=np.float32)
        batch_mean, _ = encoder.run(None, {"images": batch_images})
        (batch_decoded,) = decoder.run(None, {"latents": batch_mean})
        expected = ((rows, mean.shape[1]), (rows, images.shape[1]))
        if (batch_mean.shape, batch_decoded.shape) != expected:
            raise ExportError(f"batch of {rows}: got {batch_mean.shape} and {batch_decoded.shape}")
    return report
