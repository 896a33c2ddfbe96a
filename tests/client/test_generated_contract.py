"""The contract code committed in client/src/vae is exactly what protos/generate.sh makes of
protos/vae/v1/vae.proto, so the two cannot drift apart."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "client" / "src"


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / "vae").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_regenerating_from_the_proto_gives_the_committed_files_byte_for_byte(tmp_path) -> None:
    result = subprocess.run(
        ["sh", str(REPO / "protos" / "generate.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    generated = files_under(tmp_path)
    assert "vae/v1/vae_pb2_grpc.py" in generated
    committed = files_under(COMMITTED)
    assert sorted(committed) == sorted(generated)
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"{stale} differ from the .proto's code: run `make gen` and commit"
