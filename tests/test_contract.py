"""The gRPC contract (protos/) passes buf's lint rules and only grows: buf breaking compares it
with the last released contract, so a renumbered, retyped or removed field or RPC fails here.

buf comes from scripts/install-tools.sh (`make test` runs it first); without it these tests
skip, and under CI=true they fail.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploy_tools import find_tool

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools"
# The main commit holding the last released contract. A full id, because a fresh clone carries
# the history but not necessarily the tags.
RELEASED_CONTRACT = "aaaadde651bf8533caec92a4545de13653ef31a7"
AGAINST_RELEASED = f"{REPO / '.git'}#ref={RELEASED_CONTRACT},subdir=protos"


def run_buf(buf: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`buf args` in the repository, with buf's cache inside .tools/ instead of the home folder."""
    env = {**os.environ, "BUF_CACHE_DIR": str(TOOLS / "buf" / "cache")}
    return subprocess.run(
        [buf, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def buf() -> str:
    """buf from .tools/bin (or PATH)."""
    return find_tool("buf", TOOLS / "bin")


def test_the_contract_passes_bufs_standard_lint_rules(buf: str) -> None:
    result = run_buf(buf, "lint")
    assert result.returncode == 0, output(result)


def test_the_contract_keeps_everything_the_released_one_had(buf: str) -> None:
    result = run_buf(buf, "breaking", "--against", AGAINST_RELEASED)
    assert result.returncode == 0, output(result)


def test_a_renumbered_field_is_caught_as_breaking(buf: str, tmp_path: Path) -> None:
    # The check above means something only if buf's configuration lets it fail.
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO / "protos", tmp_path / "protos")
    proto = tmp_path / "protos" / "vae" / "v1" / "vae.proto"
    text = proto.read_text()
    assert "  uint32 count = 1;\n" in text
    proto.write_text(text.replace("  uint32 count = 1;\n", "  uint32 count = 99;\n", 1))
    result = run_buf(buf, "breaking", str(tmp_path), "--against", AGAINST_RELEASED)
    assert result.returncode != 0, output(result)
    assert '"count" on message "SampleRequest"' in result.stdout, output(result)
