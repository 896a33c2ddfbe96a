"""The Helm chart lints, renders valid Kubernetes objects, and they carry what operators need.

Every test runs the real helm; the rendered objects are validated offline against the
Kubernetes schemas by kubernetes-validate. The Prometheus Operator's objects have no bundled
schema, so their shape is checked here.
"""

import dataclasses
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import CHART, KUBE_VERSIONS, RELEASE, REPO, Helm, Manifests

from service.config import Config, env_name, load_config

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
ALL_ON = CHART / "ci" / "all-on-values.yaml"
BAD_VALUES = Path(__file__).with_name("bad-values")
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
SELECTOR = {"app.kubernetes.io/name": "vae-serving", "app.kubernetes.io/instance": RELEASE}


@pytest.fixture(scope="module")
def default(helm: Helm) -> Manifests:
    """The chart rendered with its default values."""
    return helm.render()


@pytest.fixture(scope="module")
def all_on(helm: Helm) -> Manifests:
    """The chart rendered with every option turned on."""
    return helm.render([ALL_ON])


def test_chart_passes_helm_lint_strict(helm: Helm):
    result = helm.run("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_chart_passes_helm_lint_strict_with_each_ci_values_file(helm: Helm, values: Path):
    result = helm.run("lint", "--strict", str(CHART), "--values", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_rendered_manifests_are_valid_kubernetes_objects(
    helm: Helm, kubernetes_validate: str, values: Path | None, kube_version: str
):
    rendered = helm.template([values] if values else [], kube_version=kube_version)
    assert rendered.returncode == 0, rendered.stderr
    # An empty stream would pass the validator: make sure there is something to validate.
    assert {"Deployment", "Service", "ConfigMap"} <= Manifests.parse(rendered.stdout).kinds()
    result = subprocess.run(
        [kubernetes_validate, "--strict", "--quiet", "-k", kube_version, "-"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_option_on_renders_every_kind_of_object(all_on: Manifests):
    assert all_on.kinds() == {
        "ConfigMap", "Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "Pod",
    }
    assert len(all_on.all("Service")) == 2


def test_probes_are_native_grpc_checks_of_the_health_service(default: Manifests):
    server = default.server_container()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["grpc"] == {"port": 50051}, probe
        assert set(server[probe]) - {"grpc"} == set(DEFAULTS["probes"][probe[: -len("Probe")]])


def test_with_tls_the_probes_run_the_images_health_check_client(all_on: Manifests):
    server = all_on.server_container()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "grpc" not in server[probe]
        command = server[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "service.healthcheck"]
        assert "127.0.0.1:8443" in command


def test_pods_run_non_root_read_only_without_privileges(all_on: Manifests):
    pod = all_on.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True  # all-on asks for it
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["limits"]["memory"]


def test_service_token_is_not_mounted_by_default(default: Manifests):
    pod = default.one("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_ports_are_named_and_grpc_declares_its_app_protocol(all_on: Manifests):
    server = all_on.server_container()
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "grpc": 8443, "metrics": 9464,
    }
    service = all_on.one("Service", "vae")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == SELECTOR


def test_headless_service_resolves_to_every_pod_for_client_side_balancing(all_on: Manifests):
    headless = all_on.one("Service", "vae-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == SELECTOR
    assert [(p["name"], p["appProtocol"]) for p in headless["spec"]["ports"]] == [("grpc", "grpc")]


def test_headless_service_is_off_by_default(default: Manifests):
    assert [s["metadata"]["name"] for s in default.all("Service")] == ["vae-vae-serving"]


def configmap_environment(manifests: Manifests) -> dict[str, str]:
    """The VAE_* variables the server container gets from its ConfigMap."""
    server = manifests.server_container()
    [source] = server["envFrom"]
    configmap = manifests.one("ConfigMap")
    assert source == {"configMapRef": {"name": configmap["metadata"]["name"]}}
    return configmap["data"]


def test_values_become_the_servers_vae_variables(all_on: Manifests):
    environment = configmap_environment(all_on)
    assert environment["VAE_MAX_BATCH_SIZE"] == "128"
    assert environment["VAE_MAX_DELAY_MS"] == "1.5"
    assert environment["VAE_HANDLER_THREADS"] == "16"
    assert environment["VAE_MAX_STREAMS"] == "4"
    assert environment["VAE_MAX_MESSAGE_BYTES"] == "16777216"
    assert environment["VAE_GRACE_SECONDS"] == "20.5"
    assert environment["VAE_REFLECTION"] == "false"
    assert environment["VAE_GRPC_PORT"] == "8443"
    assert environment["VAE_METRICS_PORT"] == "9464"
    assert environment["VAE_MODEL_DIR"] == "/models/vae-mnist"
    assert environment["VAE_WORKERS"] == "3"


def test_every_server_setting_can_be_set_from_the_chart(all_on: Manifests):
    """The chart and service/config.py agree: one VAE_* variable per setting, no unknown ones."""
    environment = configmap_environment(all_on)
    assert set(environment) == {
        env_name(f.name) for f in dataclasses.fields(Config)
    }


def test_rendered_settings_are_accepted_by_the_servers_own_config_parser(
    default: Manifests, all_on: Manifests
):
    from service.config import load_config

    assert load_config([], configmap_environment(default)).max_queue == 16384
    config = load_config([], configmap_environment(all_on))
    assert (config.max_batch_size, config.grpc_port, config.reflection) == (128, 8443, False)
    assert config.tls and config.tls_client_ca_file is not None


def cpu_limit_values(tmp_path: Path, **values: Any) -> Path:
    """A values file of `values`; a key `cpu` is the CPU limit, as written in YAML."""
    if "cpu" in values:
        values["resources"] = {"limits": {"cpu": values.pop("cpu")}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("values", "workers"),
    [
        ({}, "2"),  # the default limit, "2"
        ({"cpu": 2}, "2"),
        ({"cpu": "1500m"}, "2"),
        ({"cpu": "500m"}, "1"),
        ({"cpu": 1.5}, "2"),
        ({"cpu": "0.25"}, "1"),
        ({"cpu": "8"}, "8"),
        ({"workers": 3}, "3"),
        ({"workers": 3, "cpu": "500m"}, "3"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_workers_are_one_per_cpu_of_the_limit_unless_given(
    helm: Helm, tmp_path: Path, values: dict[str, Any], workers: str
):
    manifests = helm.render([cpu_limit_values(tmp_path, **values)])
    assert configmap_environment(manifests)["VAE_WORKERS"] == workers


@pytest.mark.parametrize("values", [{"cpu": None}, {"workers": 0, "cpu": None}])
def test_without_a_cpu_limit_the_server_picks_its_own_workers(
    helm: Helm, tmp_path: Path, values: dict[str, Any]
):
    manifests = helm.render([cpu_limit_values(tmp_path, **values)])
    assert "VAE_WORKERS" not in configmap_environment(manifests)
    assert "cpu" not in manifests.server_container()["resources"]["limits"]


def test_default_values_leave_the_model_directory_to_the_image(default: Manifests):
    assert "VAE_MODEL_DIR" not in configmap_environment(default)
    assert "initContainers" not in default.one("Deployment")["spec"]["template"]["spec"]


def test_config_checksum_changes_exactly_when_the_config_changes(helm: Helm):
    def checksum(*set_values: str) -> str:
        deployment = helm.render(set_values=set_values).one("Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum("config.maxBatchSize=32") != base
    assert checksum("ports.metrics=9100") != base
    assert checksum("workers=5") != base
    assert checksum("replicaCount=5", "podLabels.team=ml") == base


def test_termination_grace_outlasts_the_prestop_pause_and_the_drain(
    default: Manifests, all_on: Manifests
):
    for manifests, values in ((default, DEFAULTS), (all_on, yaml.safe_load(ALL_ON.read_text()))):
        pod = manifests.one("Deployment")["spec"]["template"]["spec"]
        server = manifests.server_container()
        pause = server["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = float(configmap_environment(manifests)["VAE_GRACE_SECONDS"])
        assert pause == values["preStopSleepSeconds"]
        assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_a_grace_period_shorter_than_the_drain_is_refused(helm: Helm):
    result = helm.template(set_values=["terminationGracePeriodSeconds=20"])
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds (20) must be above" in result.stderr


def test_pods_spread_over_zones_and_nodes(default: Manifests):
    constraints = default.one("Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone", "kubernetes.io/hostname",
    ]
    for constraint in constraints:
        assert constraint["labelSelector"] == {"matchLabels": SELECTOR}


def test_selector_labels_do_not_follow_user_values(default: Manifests, all_on: Manifests):
    for manifests in (default, all_on):
        deployment = manifests.one("Deployment")
        assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR}
        assert SELECTOR.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    pod_labels = all_on.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["team"] == "ml-platform"


def test_image_tag_defaults_to_the_charts_app_version_which_is_the_projects_version(
    default: Manifests,
):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert app_version == project["version"]  # the tag scripts/build-image.sh gives
    assert default.server_container()["image"] == f"localhost/vae-serving:{app_version}"


def test_disruption_budget_and_autoscaler_target_the_deployment(all_on: Manifests):
    deployment = all_on.one("Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pdb = all_on.one("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": "25%", "selector": {"matchLabels": SELECTOR}}
    hpa = all_on.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_without_autoscaling_the_deployment_sets_replicas(helm: Helm):
    manifests = helm.render([CHART / "ci" / "minimal-values.yaml"])
    assert manifests.one("Deployment")["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in manifests.kinds()
    assert "PodDisruptionBudget" not in manifests.kinds()
    assert "lifecycle" not in manifests.server_container()


def test_tls_files_are_mounted_from_the_secret(all_on: Manifests):
    pod = all_on.one("Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "vae-serving-tls"
    files = {item["path"] for item in volume["secret"]["items"]}
    [mount] = [m for m in all_on.server_container()["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    environment = configmap_environment(all_on)
    tls_variables = ("VAE_TLS_CERT_FILE", "VAE_TLS_KEY_FILE", "VAE_TLS_CLIENT_CA_FILE")
    assert {environment[v] for v in tls_variables} == {
        f"{mount['mountPath']}/{name}" for name in files
    }


def test_model_can_be_copied_in_by_an_init_container(all_on: Manifests):
    pod = all_on.one("Deployment")["spec"]["template"]["spec"]
    [copier] = pod["initContainers"]
    assert copier["image"] == "registry.example.invalid/ml/vae-mnist-model:2"
    assert copier["command"] == ["cp", "-R", "/model/.", "/models/vae-mnist"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "model"]
    assert "emptyDir" in volume
    [mount] = [m for m in all_on.server_container()["volumeMounts"] if m["name"] == "model"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/models/vae-mnist", True)


def test_model_can_come_from_a_persistent_volume_claim(helm: Helm):
    manifests = helm.render([CHART / "ci" / "pvc-model-values.yaml"])
    pod = manifests.one("Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "vae-models", "readOnly": True}
    [mount] = [m for m in manifests.server_container()["volumeMounts"] if m["name"] == "model"]
    assert mount["subPath"] == "vae-mnist"
    environment = configmap_environment(manifests)
    assert (environment["VAE_MODEL_DIR"], environment["VAE_MODEL_POLL_SECONDS"]) == (
        "/models/vae-mnist", "10",
    )


def test_service_monitor_scrapes_the_metrics_port_of_this_release(all_on: Manifests):
    monitor = all_on.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert spec["namespaceSelector"] == {"matchNames": ["serving"]}
    [endpoint] = spec["endpoints"]
    assert endpoint == {
        "port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s",
    }
    # The endpoint's port name must exist on the Service it selects.
    service = all_on.one("Service", "vae")
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def alert_rules(manifests: Manifests) -> dict[str, dict[str, Any]]:
    """The PrometheusRule's alerts by name, after checking the CRD's shape."""
    rule = manifests.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    [group] = rule["spec"]["groups"]
    assert set(group) == {"name", "rules"}
    for alert in group["rules"]:
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}
        assert set(alert["annotations"]) == {"summary", "description"}
        assert alert["expr"].count("{") == alert["expr"].count("}")
        assert alert["expr"].count("(") == alert["expr"].count(")")
    return {alert["alert"]: alert for alert in group["rules"]}


def test_alerts_fire_on_error_ratio_and_p99_latency(all_on: Manifests):
    alerts = alert_rules(all_on)
    assert set(alerts) == {"VAEServingErrorRatioHigh", "VAEServingLatencyP99High"}
    errors = alerts["VAEServingErrorRatioHigh"]
    selector = 'job="vae", namespace="serving"'
    assert errors["expr"].count(f"grpc_server_handled_total{{{selector}") == 2
    assert 'grpc_code=~"Unknown|Internal|Unavailable' in errors["expr"]
    assert "[10m]" in errors["expr"] and errors["expr"].rstrip().endswith("> 0.005")
    latency = alerts["VAEServingLatencyP99High"]
    assert latency["expr"].startswith("histogram_quantile(0.99,")
    unary = f'{selector}, grpc_type="unary"'  # a stream's handling time is its whole life
    assert f"grpc_server_handling_seconds_bucket{{{unary}}}" in latency["expr"]
    assert "sum by (grpc_method, le)" in latency["expr"]
    assert latency["expr"].rstrip().endswith("> 0.1")
    for alert in alerts.values():
        assert (alert["for"], alert["labels"]) == ("5m", {"severity": "page"})


def test_alerts_count_only_codes_the_service_can_emit(all_on: Manifests):
    """The error-code regex uses the spelling of service/metrics.py's grpc_code label."""
    import grpc

    from service.metrics import grpc_code_label

    emitted = {grpc_code_label(code) for code in grpc.StatusCode}
    codes = DEFAULTS["metrics"]["prometheusRule"]["errorCodes"].split("|")
    assert set(codes) <= emitted
    assert "InvalidArgument" not in codes and "OK" not in codes


def test_prometheus_operator_objects_are_off_by_default(default: Manifests):
    assert not {"ServiceMonitor", "PrometheusRule", "ServiceAccount"} & default.kinds()


def test_service_account_is_created_when_asked(all_on: Manifests):
    account = all_on.one("ServiceAccount")
    assert account["metadata"]["name"] == "vae-serving"
    pod = all_on.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vae-serving"


def test_helm_test_pod_checks_health_through_the_service(default: Manifests):
    pod = default.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["image"] == default.server_container()["image"]
    assert container["command"] == [
        "python", "-m", "service.healthcheck", "--target", "vae-vae-serving.serving.svc:50051",
    ]
    assert pod["spec"]["restartPolicy"] == "Never"
    # Without the selector labels, so the Service never sends calls to the test pod.
    assert not SELECTOR.items() <= pod["metadata"]["labels"].items()


def render_notes(helm: Helm, tmp_path: Path, set_values: list[str]) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` skips NOTES.txt, so a copy of
    the chart carries it in a ConfigMap (templates are named by their path)."""
    chart = tmp_path / "vae-serving"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-as-configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include "vae-serving/templates/NOTES.txt" . | quote }}\n'
    )
    args = ["template", RELEASE, str(chart), "--namespace", "serving"]
    result = helm.run(*args, *[f"--set={value}" for value in set_values])
    assert result.returncode == 0, result.stderr
    return Manifests.parse(result.stdout).one("ConfigMap", "notes")["data"]["notes"]


def test_notes_tell_how_to_port_forward_and_make_a_first_call(helm: Helm, tmp_path: Path):
    notes = render_notes(helm, tmp_path, [])
    assert (
        "kubectl -n serving port-forward service/vae-vae-serving 50051:grpc 9090:metrics" in notes
    )
    assert "grpcurl -plaintext -d '{\"count\": 4, \"seed\": 7}' 127.0.0.1:50051" in notes
    assert "vae.v1.VAEService/Sample" in notes
    assert "curl -s http://127.0.0.1:9090/metrics" in notes
    assert "helm -n serving test vae" in notes


def test_notes_give_tls_flags_when_tls_is_on(helm: Helm, tmp_path: Path):
    notes = render_notes(helm, tmp_path, ["tls.enabled=true", "tls.secretName=s"])
    assert "-plaintext" not in notes
    assert "grpcurl -cacert ca.crt -authority vae-vae-serving.serving.svc" in notes


@pytest.mark.parametrize("bad", sorted(BAD_VALUES.glob("*.yaml")), ids=lambda p: p.stem)
def test_schema_rejects_bad_values(helm: Helm, bad: Path):
    """Each file names, in its first line, the words helm's schema error must contain."""
    expected = bad.read_text().splitlines()[0].removeprefix("# expect:").strip()
    result = helm.template([bad])
    assert result.returncode != 0, f"{bad.name} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        (["tls.enabled=true"], "tls.enabled needs tls.secretName"),
        (["model.source=pvc"], "model.source pvc needs model.pvc.claimName"),
        (["model.source=initContainer"], "needs model.initContainer.image"),
        (["autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"], "must not exceed"),
    ],
)
def test_incomplete_options_are_refused_with_a_reason(
    helm: Helm, set_values: list[str], message: str
):
    result = helm.template(set_values=set_values)
    assert result.returncode != 0
    assert message in result.stderr



def documented_values(schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Dotted paths of the values an operator sets one by one: the schema's properties, down to
    the objects passed through to Kubernetes whole (resources, probe timings, ...)."""
    for name, prop in schema.get("properties", {}).items():
        if name == "global":
            continue
        dotted = f"{path}.{name}" if path else name
        whole = name == "resources" or path == "probes"
        if "properties" in prop and not whole:
            yield from documented_values(prop, dotted)
        else:
            yield dotted


def schema_properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict]]:
    """Every property of the schema, at every depth."""
    for name, prop in schema.get("properties", {}).items():
        dotted = f"{path}.{name}" if path else name
        yield dotted, prop
        yield from schema_properties(prop, dotted)


def test_every_schema_property_has_a_description():
    undescribed = [path for path, prop in schema_properties(SCHEMA) if not prop.get("description")]
    assert undescribed == []


def test_every_value_is_commented_in_values_yaml():
    """Each value's line in values.yaml comes right after a comment line."""
    commented: dict[str, bool] = {}
    keys: list[str] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"( *)([A-Za-z]\w*):", line)
        if match is None:
            continue
        keys = keys[: len(match.group(1)) // 2] + [match.group(2)]
        commented[".".join(keys)] = number > 0 and lines[number - 1].lstrip().startswith("#")
    uncommented = [path for path in documented_values(SCHEMA) if not commented.get(path)]
    assert uncommented == []


def test_every_value_is_listed_in_the_charts_readme():
    readme = (CHART / "README.md").read_text()
    unlisted = [path for path in documented_values(SCHEMA) if f"| `{path}` |" not in readme]
    assert unlisted == []


# Where the chart's default deliberately differs from the server's own, and why.
CHART_DEFAULTS_OF_ITS_OWN = {
    "log_format": "json",  # one JSON object per line, for the cluster's log collector
}
# Derived from the CPUs: by the chart from the pod's CPU limit, by the server from the CPUs it
# may use. They agree in a pod, but not on the machine running this test.
DEFAULTS_FROM_THE_CPUS = {"workers"}


def test_the_charts_defaults_are_the_servers_own_unless_listed(default: Manifests):
    """A default changed in service/config.py but not in values.yaml (maxDelayMs stayed 0 while
    the server's became 2 ms) would silently run every deployment differently."""
    charted = load_config([], configmap_environment(default))
    servers = load_config([], {})
    differing = {
        field.name: getattr(charted, field.name)
        for field in dataclasses.fields(Config)
        if field.name not in DEFAULTS_FROM_THE_CPUS
        and getattr(charted, field.name) != getattr(servers, field.name)
    }
    assert differing == CHART_DEFAULTS_OF_ITS_OWN
