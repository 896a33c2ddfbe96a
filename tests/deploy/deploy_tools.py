"""The deploy tests' tools: helm, podman and rendered manifests, and where to find them.

scripts/install-tools.sh installs the tools (`make test` runs it first). A missing tool skips the
tests that need it, with the reason; under CI=true it fails them instead, so CI can never pass
by not checking.
"""

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "vae-serving"
TOOLS = REPO / ".tools"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest one
# kubernetes-validate bundles: the manifests must be valid for both.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
RELEASE = "vae"


def missing_tool(reason: str) -> None:
    """Skip the test, or fail it under CI=true where every check must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (under CI=true a missing tool fails; scripts/install-tools.sh)")
    pytest.skip(f"{reason}; run scripts/install-tools.sh")


def find_tool(name: str, *places: Path) -> str:
    """The first executable `name` in `places`, then on PATH; skips or fails when there is none."""
    for place in places:
        candidate = place / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        missing_tool(f"{name} is not installed")
    assert found is not None
    return found


@dataclass(frozen=True)
class Tool:
    """A command-line tool run with its own environment."""

    binary: str
    env: dict[str, str] = field(repr=False)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the tool with `args`; the result is returned whatever the exit code."""
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )


class Podman(Tool):
    """podman, configured by .tools/containers.conf (runc, cgroupfs, host network)."""


class Helm(Tool):
    """helm, with its cache and config kept inside .tools/."""

    def template(
        self,
        values_files: Sequence[Path] = (),
        set_values: Sequence[str] = (),
        kube_version: str = KUBE_VERSIONS[0],
    ) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart, as release RELEASE in namespace `serving`."""
        args = ["template", RELEASE, str(CHART), "--namespace", "serving"]
        args += ["--kube-version", kube_version]
        for values_file in values_files:
            args += ["--values", str(values_file)]
        for assignment in set_values:
            args += ["--set", assignment]
        return self.run(*args)

    def render(
        self, values_files: Sequence[Path] = (), set_values: Sequence[str] = ()
    ) -> "Manifests":
        """The rendered manifests, parsed; fails the test when helm refuses the values."""
        result = self.template(values_files, set_values)
        assert result.returncode == 0, result.stderr
        return Manifests.parse(result.stdout)


@dataclass(frozen=True)
class Manifests:
    """Rendered Kubernetes objects, found by kind (and name when a kind occurs twice)."""

    objects: list[dict[str, Any]]

    @classmethod
    def parse(cls, text: str) -> "Manifests":
        """Parse a multi-document YAML stream, dropping empty documents."""
        return cls([doc for doc in yaml.safe_load_all(text) if doc])

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind`."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        """The single object of `kind` (named `name` when given)."""
        matches = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
        return matches[0]

    def kinds(self) -> set[str]:
        """The kinds present."""
        return {obj["kind"] for obj in self.objects}

    def server_container(self) -> dict[str, Any]:
        """The Deployment's serving container."""
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "server")

