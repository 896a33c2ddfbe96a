"""The container image, built and run for real with podman.

The image is built from the Dockerfile on the debootstrap base (localhost/py-base:bookworm, made by
scripts/install-tools.sh since no registry can be pulled from here) and run the way the chart
runs it: non-root, read-only root filesystem, no capabilities, with the chart's own ConfigMap as
its environment. The host network is used, so the server listens on free ports of this machine.
"""

import datetime
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from deploy_tools import REPO, Helm, Manifests, Podman, missing_tool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from vae_client import VAEClient

# A cold build downloads onnxruntime, numpy and grpcio: minutes, not the suite's default 300 s.
pytestmark = pytest.mark.timeout(900)

BASE_IMAGE = "localhost/py-base:bookworm"
IMAGE = "localhost/vae-serving:test"
SIZE_GOAL_BYTES = 400 * 1000 * 1000
STARTUP_SECONDS = 90


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image built by scripts/build-image.sh (what `make image` runs) on the local base."""
    if podman.run("image", "exists", BASE_IMAGE).returncode != 0:
        missing_tool(f"the base image {BASE_IMAGE} is missing")
    assert (REPO / "models" / "vae-mnist").is_dir(), "the image bundles models/vae-mnist"
    previous = podman.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    env = {**podman.env, "BASE_IMAGE": BASE_IMAGE, "IMAGE": IMAGE, "ENGINE": "podman"}
    build = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=840,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    built = podman.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != built:
        # The last run's image lost its tag; remove it so test runs do not fill the disk.
        podman.run("rmi", previous)
    return IMAGE


@dataclass(frozen=True)
class Server:
    """A running container of the image."""

    name: str
    grpc_target: str
    metrics_url: str


def chart_environment(helm: Helm, set_values: Sequence[str]) -> dict[str, str]:
    """The VAE_* variables the chart's ConfigMap gives the server, for these values."""
    return Manifests.parse(helm.template(set_values=set_values).stdout).one("ConfigMap")["data"]


def start_server(
    podman: Podman,
    image: str,
    environment: dict[str, str],
    volumes: Sequence[str] = (),
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str = "",
) -> Server:
    """Run the image as the chart would and wait until its health service says SERVING."""
    name = f"vae-serving-test-{free_port()}"
    args = ["run", "--detach", "--name", name, "--network", "host"]
    # The chart's securityContext: numeric non-root user, read-only root, no capabilities.
    args += ["--user", "10001:10001", "--read-only", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges"]
    for key, value in environment.items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    started = podman.run(*args, image)
    assert started.returncode == 0, started.stderr
    target = f"127.0.0.1:{environment['VAE_GRPC_PORT']}"
    server = Server(name, target, f"http://127.0.0.1:{environment['VAE_METRICS_PORT']}/metrics")
    wait_until_serving(podman, server, credentials, server_name)
    return server


def wait_until_serving(
    podman: Podman,
    server: Server,
    credentials: grpc.ChannelCredentials | None,
    server_name: str,
) -> None:
    """Ask the health service until SERVING; fail with the container's log if it exits."""
    if credentials is None:
        channel = grpc.insecure_channel(server.grpc_target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)]
        channel = grpc.secure_channel(server.grpc_target, credentials, options=options)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while time.monotonic() < deadline:
            running = podman.run("inspect", "--format", "{{.State.Running}}", server.name)
            if running.stdout.strip() != "true":
                pytest.fail(f"the container stopped:\n{logs(podman, server)}")
            try:
                reply = health.Check(
                    health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        pytest.fail(f"not SERVING after {STARTUP_SECONDS} s:\n{logs(podman, server)}")
    finally:
        channel.close()


def logs(podman: Podman, server: Server) -> str:
    """The container's output, for failure messages."""
    result = podman.run("logs", server.name)
    return (result.stdout + result.stderr)[-4000:]


def stop(podman: Podman, server: Server) -> None:
    """Remove the container whatever state it is in."""
    podman.run("rm", "--force", "--time", "2", server.name)


@pytest.fixture(scope="module")
def server(podman: Podman, image: str, helm: Helm) -> Iterator[Server]:
    """The image running with the chart's default settings on free ports."""
    ports = [f"ports.grpc={free_port()}", f"ports.metrics={free_port()}"]
    running = start_server(podman, image, chart_environment(helm, ports))
    yield running
    stop(podman, running)


def test_image_answers_sample_and_encode_over_grpc(server: Server):
    with VAEClient(server.grpc_target, timeout_seconds=30) as client:
        samples = client.sample(4, seed=7)
        assert samples.images.shape == (4, 28, 28)
        assert samples.images.dtype == np.float32
        assert samples.images.min() >= 0.0 and samples.images.max() <= 1.0
        assert samples.model_version == "1"
        encoding = client.encode(samples.images)
        assert encoding.mean.shape == (4, 2)
        assert np.isfinite(encoding.mean).all() and np.isfinite(encoding.log_variance).all()


def test_image_exports_prometheus_metrics(server: Server):
    with VAEClient(server.grpc_target, timeout_seconds=30) as client:
        client.sample(2, seed=1)
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    handled = [
        sample.value
        for family in families
        if family.name == "grpc_server_handled"
        for sample in family.samples
        if sample.labels["grpc_method"] == "Sample" and sample.labels["grpc_code"] == "OK"
    ]
    assert handled and handled[0] >= 1
    assert "grpc_server_handling_seconds" in {family.name for family in families}


def test_image_healthcheck_reports_healthy(podman: Podman, server: Server):
    result = podman.run("healthcheck", "run", server.name)
    assert result.returncode == 0, result.stdout + result.stderr + logs(podman, server)


def test_sigterm_drains_and_exits_zero(podman: Podman, image: str, helm: Helm):
    ports = [f"ports.grpc={free_port()}", f"ports.metrics={free_port()}"]
    environment = chart_environment(helm, [*ports, "config.graceSeconds=5"])
    running = start_server(podman, image, environment)
    try:
        sent = podman.run("kill", "--signal", "TERM", running.name)
        assert sent.returncode == 0, sent.stderr
        waited = podman.run("wait", running.name, timeout=60)
        assert waited.stdout.strip() == "0", logs(podman, running)
    finally:
        stop(podman, running)


def write_certificates(directory: Path, server_name: str) -> None:
    """A CA and a server certificate it signs (server and client auth), as a cert-manager
    Secret holds them: tls.crt, tls.key, ca.crt."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key, issuer_key, issuer_name, extensions) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vae-serving test CA")])
    ca = issue("vae-serving test CA", ca_key, ca_key, ca_name,
               [(x509.BasicConstraints(ca=True, path_length=None), True)])
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue(server_name, key, ca_key, ca_name, [
        (x509.SubjectAlternativeName([x509.DNSName(server_name)]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    ])
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "tls.crt").write_bytes(certificate.public_bytes(pem))
    (directory / "tls.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    # The server runs as uid 10001 in the container: the files must be readable by others.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def test_charts_mutual_tls_probe_passes_against_the_image(
    podman: Podman, image: str, helm: Helm, tmp_path: Path
):
    """With tls.enabled and clientAuth, the exec probe the chart renders reports SERVING."""
    values = [
        f"ports.grpc={free_port()}", f"ports.metrics={free_port()}",
        "tls.enabled=true", "tls.secretName=vae-tls", "tls.clientAuth=true",
    ]
    manifests = Manifests.parse(helm.template(set_values=values).stdout)
    probe = manifests.server_container()["readinessProbe"]["exec"]["command"]
    server_name = probe[probe.index("--server-name") + 1]
    [mount] = [m for m in manifests.server_container()["volumeMounts"] if m["name"] == "tls"]
    write_certificates(tmp_path, server_name)
    ca = (tmp_path / "ca.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials(
        ca, (tmp_path / "tls.key").read_bytes(), (tmp_path / "tls.crt").read_bytes()
    )
    running = start_server(
        podman,
        image,
        manifests.one("ConfigMap")["data"],
        volumes=[f"{tmp_path}:{mount['mountPath']}:ro"],
        credentials=credentials,
        server_name=server_name,
    )
    try:
        result = podman.run("exec", running.name, *probe)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "SERVING"
    finally:
        stop(podman, running)


def test_image_holds_no_torch_no_pip_no_compiler(podman: Podman, image: str):
    code = (
        "import importlib.util, shutil, sys;"
        "found = [m for m in ('torch', 'onnx', 'pip', 'grpc_tools', 'PIL')"
        " if importlib.util.find_spec(m)];"
        "found += [t for t in ('gcc', 'cc', 'make') if shutil.which(t)];"
        "print(' '.join(found)); sys.exit(1 if found else 0)"
    )
    result = podman.run("run", "--rm", "--entrypoint", "python", image, "-c", code)
    assert result.returncode == 0, f"found in the image: {result.stdout}{result.stderr}"


def test_image_is_well_under_400_mb(podman: Podman, image: str, capsys):
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
    with capsys.disabled():
        print(f"\nimage {image}: {size / 1e6:.0f} MB (base {BASE_IMAGE})")
    assert size < SIZE_GOAL_BYTES


def test_image_runs_as_numeric_user_with_exec_entrypoint(podman: Podman, image: str):
    result = podman.run("image", "inspect", "--format", "json", image)
    [inspected] = json.loads(result.stdout)
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "service"]
    assert set(config["ExposedPorts"]) == {"50051/tcp", "9090/tcp"}
    assert "VAE_MODEL_DIR=/opt/models/vae-mnist" in config["Env"]
    assert "service.healthcheck" in " ".join(inspected["Healthcheck"]["Test"])
