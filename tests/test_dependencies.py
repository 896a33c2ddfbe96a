"""The runtime stays small: no torch in the service's dependencies or imports."""

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement


def requirement_names(extra: str | None) -> set[str]:
    """The names of the runtime requirements (None) or of one extra's."""
    parsed = [Requirement(text) for text in requires("vae-serving") or []]
    return {
        r.name.lower() for r in parsed
        if (r.marker is None if extra is None else str(r.marker) == f'extra == "{extra}"')
    }


def test_the_runtime_needs_nothing_of_the_training_and_export_stack():
    assert "torch" in requirement_names("export")
    assert requirement_names(None) & requirement_names("export") == set()


def test_every_dependency_is_pinned_to_an_exact_version():
    for text in requires("vae-serving") or []:
        requirement = Requirement(text)
        assert str(requirement.specifier).startswith("=="), text


def test_torch_is_only_an_export_dependency():
    torch_users = [Requirement(t) for t in requires("vae-serving") or [] if t.startswith("torch")]
    assert [str(r.marker) for r in torch_users] == ['extra == "export"']


def test_serving_and_load_testing_never_import_torch():
    code = (
        "import sys, service.__main__, service.server, service.client, loadtest.__main__;"
        "sys.exit(1 if 'torch' in sys.modules or 'onnx' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
