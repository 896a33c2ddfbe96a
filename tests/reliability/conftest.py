"""Fixtures of the reliability tests: held-out digits and a model directory of one's own."""

from pathlib import Path

import numpy as np
import pytest
from reliability_tools import BUNDLED_MODEL_DIR, REPO

from tests.service.test_model_loading import copy_version


@pytest.fixture(scope="session")
def heldout() -> np.ndarray:
    """The held-out MNIST digits, uint8 (999, 784)."""
    data = np.load(REPO / "data" / "mnist10k.npz")
    return data["images"][data["split"] == 1]


@pytest.fixture
def served_models(tmp_path: Path) -> Path:
    """A model directory holding a copy of the bundled model as version 1."""
    root = tmp_path / "models"
    copy_version(BUNDLED_MODEL_DIR, root, "1")
    return root
