"""The shipped scenario files, run briefly against the real service, as ghz users would."""

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from vae.v1 import vae_pb2

from loadtest.cli import EXIT_FAILED, EXIT_OK, main
from loadtest.descriptors import REFLECTION_METHODS, resolve_by_reflection
from loadtest.scenarios import scenario_files
from loadtest.scenarios.__main__ import main as run_every_scenario

FILES = scenario_files()
SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]


def run_json(capsys, *flags: str) -> tuple[int, dict]:
    status = main([*flags, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_scenario_by_reflection_alone_gets_only_ok(vae_server, capsys, path: Path) -> None:
    status, report = run_json(capsys, "--config", str(path), "-z", "300ms", vae_server.target)
    assert report["statusCodeDistribution"] == {"OK": report["count"]}
    assert report["count"] > 0
    assert status == EXIT_OK


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_scenario_with_the_proto_file_gets_only_ok(vae_server, vae_proto, capsys, path) -> None:
    flags = ["--config", str(path), "--proto", vae_proto, "-n", "40", "-z", "0", "-c", "4"]
    status, report = run_json(capsys, *flags, vae_server.target)
    assert report["statusCodeDistribution"] == {"OK": 40}
    assert status == EXIT_OK


def test_a_method_the_server_lacks_is_unimplemented(vae_server, vae_proto, tmp_path, capsys):
    """A client built from a newer contract than the server's: the call reaches the server."""
    contract = Path(vae_proto).read_text()
    newer = tmp_path / "vae" / "v1" / "vae.proto"
    newer.parent.mkdir(parents=True)
    newer.write_text(
        contract.replace(
            "service VAEService {",
            "service VAEService {\n  rpc Upscale(SampleRequest) returns (SampleResponse);",
        )
    )
    flags = ["--proto", str(newer), "--call", "vae.v1.VAEService.Upscale", "-d", '{"count": 1}']
    status, report = run_json(capsys, *flags, "-n", "5", "-c", "1", "--insecure", vae_server.target)
    assert report["statusCodeDistribution"] == {"Unimplemented": 5}
    assert status == EXIT_FAILED


def test_make_loadtest_runs_every_scenario_with_our_generator(vae_server, capsys) -> None:
    flags = ["--generator", "ours", "--target", vae_server.target, "--", "-n", "20", "-z", "0"]
    assert run_every_scenario(flags) == 0
    printed = capsys.readouterr().out
    assert printed.count("[OK]   20 responses") == len(FILES)
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("=== ")] == [
        f"=== {path.stem}" for path in FILES
    ]


def test_the_service_answers_ghzs_reflection_for_every_rpc(vae_server) -> None:
    async def resolve_all() -> list[tuple[str, str]]:
        async with grpc.aio.insecure_channel(vae_server.target) as channel:
            resolved = [
                await resolve_by_reflection(channel, f"{SERVICE.full_name}.{method.name}")
                for method in SERVICE.methods
            ]
        return [(r.descriptor.full_name, r.source) for r in resolved]

    assert asyncio.run(resolve_all()) == [
        (method.full_name, REFLECTION_METHODS[0]) for method in SERVICE.methods
    ]
