"""The client and the server are two distributions: no public class name means two things."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def public_classes(*packages: Path) -> dict[str, list[str]]:
    """Each public top-level class name -> the modules defining it."""
    found: dict[str, list[str]] = {}
    for package in packages:
        for module in sorted(package.rglob("*.py")):
            for node in ast.parse(module.read_text()).body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    found.setdefault(node.name, []).append(str(module.relative_to(REPO)))
    return found


def test_no_public_class_of_the_client_shares_a_name_with_one_of_the_server() -> None:
    client = public_classes(REPO / "client" / "src" / "vae_client")
    server = public_classes(REPO / "service", REPO / "loadtest")
    assert {"VAEClient", "SampledDigits", "Embeddings", "Reconstructions"} <= set(client)
    assert {"VAEPipeline", "Encoding", "Reconstruction", "Samples"} <= set(server)
    shared = {name: client[name] + server[name] for name in client.keys() & server.keys()}
    assert not shared
