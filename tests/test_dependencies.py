"""The runtime stays small: no torch in the service's dependencies or imports, and the client
(the vae-client distribution) needs neither onnxruntime nor prometheus-client nor the server."""

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

RUNTIME = {"grpcio", "grpcio-health-checking", "grpcio-reflection", "numpy", "onnxruntime",
           "prometheus-client", "protobuf"}
CLIENT_RUNTIME = {"grpcio", "numpy", "protobuf"}


def requirement_names(extra: str | None) -> set[str]:
    """The names of the runtime requirements (None) or of one extra's."""
    parsed = [Requirement(text) for text in requires("vae-serving") or []]
    return {
        r.name.lower() for r in parsed
        if (r.marker is None if extra is None else str(r.marker) == f'extra == "{extra}"')
    }


def test_runtime_dependencies_are_exactly_the_serving_stack():
    # An allow-list: a new runtime dependency is a decision for review, not a side effect.
    assert requirement_names(None) == RUNTIME


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


def packages_imported_by(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `modules`."""
    code = (
        f"import sys, {', '.join(modules)};"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_serving_and_load_testing_never_import_torch():
    imported = packages_imported_by(
        "service.__main__", "service.server", "vae_client.__main__", "loadtest.__main__"
    )
    assert "service" in imported and not imported & {"torch", "onnx"}


def test_the_client_needs_only_grpcio_protobuf_and_numpy_pinned_as_the_server_pins_them():
    client = [Requirement(text) for text in requires("vae-client") or []]
    runtime = {r.name.lower(): r for r in client if r.marker is None}
    assert set(runtime) == CLIENT_RUNTIME
    server = {
        Requirement(text).name.lower(): str(Requirement(text).specifier)
        for text in requires("vae-serving") or [] if Requirement(text).marker is None
    }
    for name, requirement in runtime.items():
        assert str(requirement.specifier) == server[name], requirement


def test_pillow_is_the_clients_images_extra_only():
    extras = [Requirement(t) for t in requires("vae-client") or [] if Requirement(t).marker]
    assert [(r.name, str(r.specifier), str(r.marker)) for r in extras] == [
        ("Pillow", "==13.0.0", 'extra == "images"')
    ]


def test_the_client_imports_neither_the_server_nor_its_runtime():
    imported = packages_imported_by("vae_client", "vae_client.__main__")
    assert "vae" in imported
    assert not imported & {"service", "onnxruntime", "prometheus_client", "PIL", "torch"}


def test_the_server_shares_only_the_contract_with_the_client():
    imported = packages_imported_by(
        "service.__main__", "service.server", "service.healthcheck", "loadtest.__main__"
    )
    assert "vae" in imported and "vae_client" not in imported
