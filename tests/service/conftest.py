"""Fixtures of the service tests: the bundled model's manifest and real held-out digits."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.model import newest_version_dir
from vae_client import VAEClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The bundled model directory the default server serves from."""
    return REPO / "models" / "vae-mnist"


@pytest.fixture(scope="session")
def model_manifest(model_dir: Path) -> dict[str, Any]:
    """model.json of the version the default server serves."""
    version_dir = newest_version_dir(model_dir)
    return json.loads((version_dir / "model.json").read_text())


@pytest.fixture(scope="module")
def client(vae_server) -> Iterator[VAEClient]:
    """The Python client on the module's default server."""
    with VAEClient(vae_server.target) as client:
        yield client
