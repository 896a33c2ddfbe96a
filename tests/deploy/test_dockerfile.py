"""The Dockerfile passes hadolint with no findings at all, info level included."""

import subprocess

from deploy_tools import REPO


def test_dockerfile_has_no_hadolint_findings(hadolint: str):
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""

