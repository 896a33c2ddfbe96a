"""Fixtures of the reliability tests: held-out digits and a model directory of one's own."""

from pathlib import Path

import pytest
from reliability_tools import BUNDLED_MODEL_DIR

from tests.model_versions import copy_version


@pytest.fixture
def served_models(tmp_path: Path) -> Path:
    """A model directory holding a copy of the bundled model as version 1."""
    root = tmp_path / "models"
    copy_version(BUNDLED_MODEL_DIR, root, "1")
    return root
