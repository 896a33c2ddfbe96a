"""The runtime stays small: no torch in the service's dependencies or imports."""

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

RUNTIME = {"grpcio", "grpcio-health-checking", "grpcio-reflection", "numpy", "onnxruntime",
           "prometheus-client", "protobuf"}


def runtime_requirements() -> list[Requirement]:
    parsed = [Requirement(text) for text in requires("vae-serving") or []]
    return [r for r in parsed if r.marker is None]


def test_runtime_dependencies_are_exactly_the_serving_stack():
    assert {r.name.lower() for r in runtime_requirements()} == RUNTIME


def test_every_dependency_is_pinned_to_an_exact_version():
    for text in requires("vae-serving") or []:
        requirement = Requirement(text)
        assert str(requirement.specifier).startswith("=="), text


def test_torch_is_only_an_export_dependency():
    torch_users = [Requirement(t) for t in requires("vae-serving") or [] if t.startswith("torch")]
    assert [str(r.marker) for r in torch_users] == ['extra == "export"']
    assert str(torch_users[0].specifier) == "==2.13.0"


def test_serving_and_load_testing_never_import_torch():
    code = (
        "import sys, service.__main__, service.server, service.client, loadtest.__main__;"
        "sys.exit(1 if 'torch' in sys.modules or 'onnx' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
