"""Digits to and from PNG files.

Pillow comes with the `images` extra and is imported where it is used, so that the numpy client
works without it.
"""

import importlib.util
from pathlib import Path

import numpy as np

MNIST_SIDE = 28


class PillowMissing(ModuleNotFoundError):
    """Reading or saving a PNG file without Pillow, which the `images` extra installs."""


def require_pillow() -> None:
    """Raise PillowMissing, saying how to install it, unless Pillow can be imported."""
    if importlib.util.find_spec("PIL") is None:
        raise PillowMissing(
            "reading and saving PNG files needs Pillow: pip install 'vae-client[images]'",
            name="PIL",
        )


def read_digit(path: Path, invert: bool = False) -> np.ndarray:
    """A (28, 28) uint8 digit from an image file: grayscale, resized to 28x28 if needed.

    MNIST digits are light strokes on a dark ground; `invert` flips a dark-on-light drawing.
    """
    require_pillow()
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        gray = image.convert("L")
        if gray.size != (MNIST_SIDE, MNIST_SIDE):
            gray = gray.resize((MNIST_SIDE, MNIST_SIDE), Image.Resampling.LANCZOS)
        if invert:
            gray = ImageOps.invert(gray)
        return np.asarray(gray, dtype=np.uint8)


def grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, H, W) images, in [0, 1] or uint8, into one uint8 picture, `columns` wide
    (default: square). Floats become rint(p x 255), as the server's UINT8 images."""
    count, height, width = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = -(-count // columns)
    canvas = np.zeros(
        (rows * (height + padding) + padding, columns * (width + padding) + padding), np.uint8
    )
    pixels = (
        images if images.dtype == np.uint8
        else np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top:top + height, left:left + width] = pixels[index]
    return canvas


def save_grid(images: np.ndarray, path: Path, columns: int | None = None) -> None:
    """Write (N, 28, 28) or (N, 784) images, in [0, 1] or uint8, to `path` as one PNG grid."""
    require_pillow()
    from PIL import Image

    images = np.asarray(images).reshape(len(images), MNIST_SIDE, MNIST_SIDE)
    Image.fromarray(grid(images, columns)).save(path)
