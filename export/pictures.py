"""Pictures of what the model learned, drawn from the exported ONNX graphs (not from torch).

samples.png          a grid of digits decoded from prior samples
reconstructions.png  held-out originals (odd rows) above their reconstructions (even rows)
manifold.png         the decoder over a grid of latent points on Gaussian quantiles
latent_space.png     held-out latent means, coloured by digit
training_curve.png   train and held-out negative ELBO per epoch
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from export.data import Digits  # noqa: E402
from export.onnx_export import session  # noqa: E402
from export.train import EpochFigures  # noqa: E402

SIDE = 28
PICTURE_SEED = 7


def tile(images: np.ndarray, columns: int, scale: int = 2) -> Image.Image:
    """Lay (N, 784) images in [0, 1] out in a grid, one pixel gap, white digits on black."""
    rows = -(-len(images) // columns)
    cell = SIDE + 1
    canvas = np.full((rows * cell + 1, columns * cell + 1), 0.35, dtype=np.float32)
    for index, image in enumerate(images):
        top, left = 1 + (index // columns) * cell, 1 + (index % columns) * cell
        canvas[top : top + SIDE, left : left + SIDE] = image.reshape(SIDE, SIDE)
    picture = Image.fromarray(np.rint(canvas * 255).astype(np.uint8), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def draw_all(version_dir: Path, held_out: Digits, history: list[EpochFigures]) -> list[Path]:
    """Draw every picture into ``version_dir``; returns the files written."""
    encoder = session(version_dir / "encoder.onnx")
    decoder = session(version_dir / "decoder.onnx")
    rng = np.random.default_rng(PICTURE_SEED)
    written = []

    def decode(latents: np.ndarray) -> np.ndarray:
        return decoder.run(["images"], {"latents": latents.astype(np.float32)})[0]

    latent_dim = decoder.get_inputs()[0].shape[1]
    path = version_dir / "samples.png"
    tile(decode(rng.standard_normal((100, latent_dim))), columns=10).save(path)
    written.append(path)

    originals = held_out.images[rng.choice(len(held_out.images), 32, replace=False)]
    means, _ = encoder.run(["mean", "log_variance"], {"images": originals})
    pairs = np.concatenate([originals.reshape(2, 16, -1), decode(means).reshape(2, 16, -1)], 1)
    path = version_dir / "reconstructions.png"
    tile(pairs.reshape(64, -1), columns=16).save(path)
    written.append(path)

    if latent_dim == 2:
        quantiles = [NormalDist().inv_cdf(p) for p in np.linspace(0.03, 0.97, 20)]
        grid = np.array([[x, y] for y in reversed(quantiles) for x in quantiles])
        path = version_dir / "manifold.png"
        tile(decode(grid), columns=20).save(path)
        written.append(path)

        means, _ = encoder.run(["mean", "log_variance"], {"images": held_out.images})
        figure, axes = plt.subplots(figsize=(6.5, 5.5), dpi=110)
        scatter = axes.scatter(means[:, 0], means[:, 1], c=held_out.labels, cmap="tab10", s=6)
        figure.colorbar(scatter, ax=axes, ticks=range(10), label="digit")
        axes.set(title="Held-out digits in latent space (posterior means)", xlabel="z1",
                 ylabel="z2")
        path = version_dir / "latent_space.png"
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        written.append(path)

    figure, axes = plt.subplots(figsize=(6.5, 4), dpi=110)
    epochs = [f.epoch for f in history]
    axes.plot(epochs, [f.train_neg_elbo for f in history], label="train")
    axes.plot(epochs, [f.heldout_neg_elbo for f in history], label="held-out")
    axes.set(title="Negative ELBO per image", xlabel="epoch", ylabel="nats",
             ylim=(min(f.heldout_neg_elbo for f in history) - 10, history[0].heldout_neg_elbo + 5))
    axes.legend()
    axes.grid(alpha=0.3)
    path = version_dir / "training_curve.png"
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    written.append(path)
    return written
