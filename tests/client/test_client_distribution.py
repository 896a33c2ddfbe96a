"""`pip install ./client` alone gives a working client: the wheel holds the client and the
contract, asks for grpcio, protobuf and numpy only, and its command runs in an environment that
has nothing else (no server, no onnxruntime, no Pillow)."""

import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
CLIENT_DEPENDENCIES = ("grpcio", "protobuf", "numpy")


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=90, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The vae-client wheel, built offline from a copy of client/ (the repo stays untouched)."""
    source = tmp_path_factory.mktemp("source") / "client"
    shutil.copytree(REPO / "client", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                 "--no-build-isolation", "--wheel-dir", dist, source)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("vae_client-0.1.0-*.whl")
    return built


def with_their_dependencies(names: tuple[str, ...]) -> set[str]:
    """`names` and everything they need, as installed here (grpcio needs typing-extensions)."""
    needed: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name.lower())
    return needed


@pytest.fixture(scope="module")
def client_only_venv(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel and, linked from this environment, only the distributions
    it needs: pip must find them already satisfied, since it may not look elsewhere."""
    venv = tmp_path_factory.mktemp("venv")
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                   .stdout.strip())
    for name in with_their_dependencies(CLIENT_DEPENDENCIES):
        distribution = importlib.metadata.distribution(name)
        tops = {Path(file).parts[0] for file in distribution.files or []} - {".."}
        for top in tops:
            if not (purelib / top).exists():
                (purelib / top).symlink_to(distribution.locate_file(top))
    result = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
                 "--quiet", wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def test_the_wheel_holds_the_client_and_the_generated_contract(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__", "__main__", "_channel", "_client", "_images", "_tensors",
                   "_stream", "_synthesize", "_dataset_file", "_progress"):
        assert f"vae_client/{module}.py" in names
    for module in ("vae_pb2", "vae_pb2_grpc"):
        assert {f"vae/v1/{module}.py", f"vae/v1/{module}.pyi"} <= names
    assert {"vae_client/py.typed", "vae/py.typed", "vae/__init__.py", "vae/v1/__init__.py"} <= names
    assert not [name for name in names if name.startswith(("service/", "loadtest/"))]


def test_the_wheel_requires_grpcio_protobuf_numpy_and_pillow_only_for_images(wheel) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.Parser().parsestr(
            archive.read("vae_client-0.1.0.dist-info/METADATA").decode()
        )
        entry_points = archive.read("vae_client-0.1.0.dist-info/entry_points.txt").decode()
    assert sorted(metadata.get_all("Requires-Dist")) == [
        "Pillow==13.0.0; extra == \"images\"",
        "grpcio==1.85.3",
        "numpy==2.4.6",
        "protobuf==7.36.2",
    ]
    assert "vae-client = vae_client.__main__:main" in entry_points


def test_the_installed_command_runs_without_the_server_or_pillow(client_only_venv) -> None:
    # Away from the repository, whose packages the current directory would otherwise offer.
    away = {"env": {key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
            "cwd": client_only_venv}
    command = client_only_venv / "bin" / "vae-client"
    helped = run(command, "--help", **away)
    assert helped.returncode == 0, helped.stderr
    assert (
        "{sample,encode,reconstruct,decode,interpolate,variations,score,synthesize,info}"
        in helped.stdout
    )
    isolated = run(client_only_venv / "bin" / "python", "-c",
                   "import importlib.util as u, vae_client;"
                   "print(vae_client.__file__, [m for m in ('service', 'onnxruntime',"
                   " 'prometheus_client', 'PIL') if u.find_spec(m)])", **away)
    assert isolated.returncode == 0, isolated.stderr
    location, missing = isolated.stdout.split(" ", 1)
    assert location.startswith(str(client_only_venv)) and missing.strip() == "[]"
    # No Pillow: saving a PNG stops before any call is made, saying what to install.
    needs_pillow = (
        "vae-client: reading and saving PNG files needs Pillow: pip install 'vae-client[images]'"
    )
    for args in (("sample", "--out", "grid.png"), ("score", "digit.png"),
                 ("interpolate", "0,0", "digit.png")):
        png = run(command, "--target", "127.0.0.1:1", *args, **away)
        assert png.returncode == 1
        assert png.stderr.strip() == needs_pillow
    # Between latent points, no file is read: the call is made (and finds nobody).
    latents = run(command, "--target", "127.0.0.1:1", "--timeout", "2", "interpolate", "0,0",
                  "1,1", **away)
    assert latents.returncode == 1 and latents.stderr.startswith("vae-client: UNAVAILABLE")
    # A dataset is a .npy file, not a PNG: synthesize needs no Pillow either.
    dataset = run(command, "--target", "127.0.0.1:1", "synthesize", "--count", "3",
                  "--resume-attempts", "0", "--out", "digits.npy", **away)
    assert dataset.returncode == 1 and "vae-client: UNAVAILABLE" in dataset.stderr
