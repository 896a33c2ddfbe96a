"""Load the committed MNIST subset (data/mnist10k.npz) with clear errors for bad files."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_PATH = REPO_ROOT / "data" / "mnist10k.npz"
PIXELS = 784
TRAIN, HELD_OUT = 0, 1


class DataError(Exception):
    """The data file is missing or is not what this project wrote."""


@dataclass(frozen=True)
class Digits:
    """Images as float32 in [0, 1], shape (N, 784), with their labels."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class DataSplits:
    train: Digits
    held_out: Digits


def load_splits(path: Path = DEFAULT_DATA_PATH) -> DataSplits:
    """Read the data file and return its train and held-out parts."""
    if not path.is_file():
        raise DataError(f"data file {path} not found; run `make data` to create it")
    try:
        with np.load(path) as archive:
            images, labels, split = archive["images"], archive["labels"], archive["split"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"data file {path} is unreadable or incomplete: {error}") from error
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != PIXELS:
        raise DataError(f"data file {path}: images must be uint8 (N, {PIXELS}), got "
                        f"{images.dtype} {images.shape}")
    if not len(images) == len(labels) == len(split):
        raise DataError(f"data file {path}: images, labels and split differ in length")
    pixels = images.astype(np.float32) / 255.0
    return DataSplits(
        train=Digits(pixels[split == TRAIN], labels[split == TRAIN]),
        held_out=Digits(pixels[split == HELD_OUT], labels[split == HELD_OUT]),
    )


def load_splits_or_exit(path: Path = DEFAULT_DATA_PATH) -> DataSplits:
    """load_splits for command-line entry points: a bad file ends the program with one line."""
    try:
        return load_splits(path)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
