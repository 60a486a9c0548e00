"""The chart renders and lints with the real Helm engine, and what it renders is valid."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from .chartlib import CHART, NAMESPACE, ROOT, SCENARIOS, chart_crds, find, one, render, render_files

helm_python = pytest.importorskip("helm_python")

# The newest Kubernetes version whose schemas kubernetes-validate ships.
KUBE_VERSION = kv_utils.latest_version()
# Kinds with no built-in schema: validated against the chart's own CRDs, or structurally.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}


def test_kubernetes_validate_version_is_current() -> None:
    major, minor = (int(x) for x in KUBE_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate only knows Kubernetes {KUBE_VERSION}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = helm_python.lint(
        CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    # Strict lint: no warnings or errors (info messages such as "icon is recommended" are fine).
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_builtin_objects_validate_against_kubernetes_schemas(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    assert objects
    checked = 0
    for obj in objects:
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(
                f"{obj['kind']}/{obj['metadata'].get('name')}: {'.'.join(map(str, err.path))}: {err.message}"
            )
        checked += 1
    assert checked >= 4


def test_chart_crds_validate_against_kubernetes_schemas() -> None:
    crds = chart_crds()
    assert {c["spec"]["group"] for c in crds} == {"dockyard.dev"}
    for crd in crds:
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def test_service_monitor_and_pod_monitor_select_what_they_should() -> None:
    objects = render(SCENARIOS["service-monitor"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(objects, "Service", "dockyard-operator-metrics")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True  # keeps dockyard_variant_weight's own namespace label
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    targets = {r["targetLabel"] for r in pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {"variant", "modeldeployment", "model_version"} <= targets
    assert not find(render(), "ServiceMonitor") and not find(render(), "PodMonitor")


def _pod_template_of(obj: dict) -> dict:
    return obj["spec"]["template"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_references_between_rendered_objects_resolve(scenario: str) -> None:
    """Selectors, named ports, volumes, ServiceAccounts and role refs point at real things."""
    objects = render(SCENARIOS[scenario])
    deployments = find(objects, "Deployment")
    assert deployments
    for dep in deployments:
        template = _pod_template_of(dep)
        assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        spec = template["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    port = container[probe]["httpGet"]["port"]
                    assert port in ports, f"{dep['metadata']['name']} {probe} port {port}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes
            names = [e["name"] for e in container.get("env", [])]
            assert len(names) == len(set(names)), f"duplicate env in {dep['metadata']['name']}"
        sa = spec.get("serviceAccountName")
        if sa and scenario != "everything-else":
            assert find(objects, "ServiceAccount", sa), f"ServiceAccount {sa} not rendered"
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and scenario != "everything-else":
                assert find(objects, "PersistentVolumeClaim", claim)
    for svc in find(objects, "Service"):
        selected = [
            d
            for d in deployments
            if svc["spec"]["selector"].items() <= _pod_template_of(d)["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {len(selected)} Deployments"
        container_ports = {
            p["name"] for c in _pod_template_of(selected[0])["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        roles = [
            r
            for r in find(objects, ref["kind"], ref["name"])
            if r["metadata"].get("namespace") == binding["metadata"].get("namespace")
        ]
        assert len(roles) == 1, f"{binding['kind']} {binding['metadata']['name']} -> {ref}"
        for subject in binding["subjects"]:
            assert subject["namespace"] == NAMESPACE
            if scenario != "everything-else":
                assert find(objects, "ServiceAccount", subject["name"])


def test_default_render_has_the_expected_objects() -> None:
    objects = render()
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount/dockyard-operator",
            "ClusterRole/dockyard-operator",
            "ClusterRoleBinding/dockyard-operator",
            "Role/dockyard-operator-leader-election",
            "RoleBinding/dockyard-operator-leader-election",
            "Deployment/dockyard-operator",
            "Service/dockyard-operator-metrics",
            "ConfigMap/dockyard-grafana-dashboard",
            "PersistentVolumeClaim/dockyard-mlflow",
            "Service/dockyard-mlflow",
            "Deployment/dockyard-mlflow",
            "NetworkPolicy/dockyard-operator",
            "NetworkPolicy/dockyard-mlflow",
            "Secret/dockyard-mlflow-auth",
            "ConfigMap/dockyard-mlflow-auth",
        ]
    )
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dockyard"


def _operator(objects: list[dict]) -> dict:
    dep = [d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    assert len(dep) == 1
    return dep[0]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_operator_deployment_defaults() -> None:
    dep = _operator(render())
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate"}  # the new Pod waits for the Lease
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "command" not in container  # the image's ENTRYPOINT ["dockyard"] runs
    assert container["args"] == [
        "operator",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--leader-elect",
        "--leader-election-id=dockyard-operator",
        "--leader-election-namespace=dockyard",
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    env = _env(container)
    assert env["DOCKYARD_MLFLOW_TRACKING_URI"] == "http://dockyard-mlflow.dockyard.svc.cluster.local:5000"
    assert env["DOCKYARD_MLFLOW_TRACKING_URI_FOR_PODS"] == env["DOCKYARD_MLFLOW_TRACKING_URI"]
    assert env["DOCKYARD_METRICS_PORT"] == "8000"
    assert env["DOCKYARD_LOG_FORMAT"] == "text"
    assert env["DOCKYARD_ENABLED_ROUTERS"] == "builtin"
    assert env["DOCKYARD_RUNTIME_IMAGE"] == "ghcr.io/dockyard-dev/dockyard-runtime:0.1.0"
    assert env["DOCKYARD_ROUTER_IMAGE"] == "nginxinc/nginx-unprivileged:1.27-alpine"
    assert env["DOCKYARD_WORKLOAD_SERVICE_ACCOUNT"] == ""  # namespace default SA in cluster scope
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "DOCKYARD_MLFLOW_CREDENTIALS_SECRET" not in env
    # The operator's own MLflow user of the embedded (authenticated) MLflow, from the Secret.
    assert env["MLFLOW_TRACKING_USERNAME"] == "dockyard-operator"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {
        "secretKeyRef": {"name": "dockyard-mlflow-auth", "key": "operator-password"}}
    assert env["DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS"] == "true"
    assert container["image"] == "ghcr.io/dockyard-dev/dockyard-operator:0.1.0"


def test_switches_change_the_operator() -> None:
    dep = _operator(render(SCENARIOS["namespaced-all-routers"]))
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--namespace=team-a" in container["args"] and "--all-namespaces" not in container["args"]
    env = _env(container)
    assert env["DOCKYARD_ENABLED_ROUTERS"] == "builtin,gateway,istio,seldon"
    assert env["DOCKYARD_WORKLOAD_SERVICE_ACCOUNT"] == "dockyard-workload"

    dep = _operator(render(SCENARIOS["everything-else"]))
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--standalone" in container["args"] and "--verbose" in container["args"]
    assert not any(a.startswith("--leader-elect") for a in container["args"])
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
    assert container["image"] == "registry.example.com/dockyard-operator@sha256:" + "a" * 64
    env = _env(container)
    assert env["DOCKYARD_LOG_FORMAT"] == "json"
    assert env["DOCKYARD_WORKLOAD_SERVICE_ACCOUNT"] == "ml-workloads"
    assert env["EXTRA"] == "1"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "custom-operator"
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_embedded_mlflow() -> None:
    objects = render()
    dep = one(objects, "Deployment", "dockyard-mlflow")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["spec"]["replicas"] == 1
    spec = dep["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["fsGroup"] == 1000
    (container,) = spec["containers"]
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    assert container["command"] == ["mlflow"]
    args = container["args"]
    assert args[0] == "server"
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args
    assert "--artifacts-destination=/mlflow/artifacts" in args
    assert "--serve-artifacts" in args and "--host=0.0.0.0" in args and "--port=5000" in args
    (hosts,) = [a.split("=", 1)[1].split(",") for a in args if a.startswith("--allowed-hosts=")]
    # In-cluster clients send these Host headers; MLflow 3 answers 403 to unknown ones.
    for host in (
        "dockyard-mlflow",
        "dockyard-mlflow:*",
        "dockyard-mlflow.dockyard.svc.cluster.local:*",
        "localhost:*",
    ):
        assert host in hosts
    assert "*" not in hosts
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/mlflow"] == "data"
    svc = one(objects, "Service", "dockyard-mlflow")
    assert svc["spec"]["ports"][0]["port"] == 5000
    pvc = one(objects, "PersistentVolumeClaim", "dockyard-mlflow")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_embedded_mlflow_authenticates_by_default() -> None:
    """Default values: the basic-auth app, its users' passwords only in a generated Secret
    (kept on uninstall), the auth store on the PVC next to the tracking store."""
    objects = render()
    spec = one(objects, "Deployment", "dockyard-mlflow")["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    (bootstrap,) = spec["initContainers"]
    assert "--app-name=basic-auth" in server["args"]
    assert bootstrap["command"] == ["python", "/etc/mlflow-auth/bootstrap.py"]
    assert bootstrap["image"] == server["image"]
    secret = one(objects, "Secret", "dockyard-mlflow-auth")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"admin-username", "admin-password", "operator-password", "flask-secret-key"}
    assert base64.b64decode(secret["data"]["admin-username"]).decode() == "admin"
    for key in ("admin-password", "operator-password"):
        assert len(base64.b64decode(secret["data"][key])) >= 32
    for container in (server, bootstrap):
        env = {e["name"]: e for e in container["env"]}
        for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "dockyard-mlflow-auth", name
            assert "value" not in env[name]
        assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    assert {e["name"]: e for e in bootstrap["env"]}["MLFLOW_OPERATOR_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "dockyard-mlflow-auth", "key": "operator-password"}}
    ini = one(objects, "ConfigMap", "dockyard-mlflow-auth")["data"]["basic_auth.ini"]
    assert "default_permission = READ" in ini and "database_uri = sqlite:////mlflow/basic_auth.db" in ini
    chart_script = (ROOT / "charts" / "dockyard" / "files" / "mlflow-auth-bootstrap.py").read_text()
    assert one(objects, "ConfigMap", "dockyard-mlflow-auth")["data"]["bootstrap.py"].strip() == chart_script.strip()


def test_mlflow_auth_existing_secret_and_off() -> None:
    objects = render({"mlflow": {"auth": {"existingSecret": "my-mlflow-admins"}}})
    assert not find(objects, "Secret")
    operator_env = {e["name"]: e for e in one(objects, "Deployment", "dockyard-operator")["spec"]["template"][
        "spec"]["containers"][0]["env"]}
    assert operator_env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "my-mlflow-admins"
    off = render({"mlflow": {"auth": {"enabled": False}}})
    assert not find(off, "Secret") and not find(off, "ConfigMap", "dockyard-mlflow-auth")
    spec = one(off, "Deployment", "dockyard-mlflow")["spec"]["template"]["spec"]
    assert "initContainers" not in spec and "--app-name=basic-auth" not in spec["containers"][0]["args"]
    operator_env = {e["name"] for e in one(off, "Deployment", "dockyard-operator")["spec"]["template"][
        "spec"]["containers"][0]["env"]}
    assert not operator_env & {"MLFLOW_TRACKING_PASSWORD", "DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS"}
    (secrets_rule,) = [r for r in one(off, "ClusterRole")["rules"] if "secrets" in r["resources"]]
    assert secrets_rule["verbs"] == ["get"]


def test_external_mlflow_replaces_the_embedded_server() -> None:
    objects = render(SCENARIOS["external-mlflow"])
    assert not [o for o in objects if "mlflow" in o["metadata"]["name"]]
    (container,) = _operator(objects)["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["DOCKYARD_MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"
    assert env["DOCKYARD_MLFLOW_TRACKING_URI_FOR_PODS"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    assert env["DOCKYARD_MLFLOW_CREDENTIALS_SECRET"] == "mlflow-credentials"
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        ref = env[key]["secretKeyRef"]
        assert ref == {"name": "mlflow-credentials", "key": key, "optional": True}
    # The private CA: the operator's own copy from the ConfigMap, and its name for the Pods.
    assert env["DOCKYARD_MLFLOW_CA_CONFIGMAP"] == "mlflow-ca"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["DOCKYARD_MLFLOW_CA_FILE"] == mounts["mlflow-ca"] + "/ca.crt"
    volumes = {v["name"]: v for v in _operator(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["mlflow-ca"]["configMap"]["name"] == "mlflow-ca"
    assert "DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS" not in env  # auth is the external MLflow's business


def test_mlflow_production_settings() -> None:
    dep = one(render(SCENARIOS["everything-else"]), "Deployment", "dy-mlflow")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--backend-store-uri=postgresql://mlflow@postgres:5432/mlflow" in container["args"]
    assert "--artifacts-destination=s3://bucket/mlflow" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-env"}}]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "mlflow-data"
    assert not find(render(SCENARIOS["everything-else"]), "PersistentVolumeClaim")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mlflow": {"external": {"credentialsSecret": "x"}}}, "needs mlflow.external.uri"),
        ({"mlflow": {"external": {"podUri": "http://x"}}}, "needs mlflow.external.uri"),
        ({"mlflow": {"external": {"caConfigMap": "ca"}}}, "needs mlflow.external.uri"),
        ({"mlflow": {"external": {"uri": "https://x"}, "auth": {"existingSecret": "s"}}},
         "existingSecret is for the embedded MLflow"),
        ({"routers": {"builtin": False}}, "enable at least one router"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service.enabled",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(values: dict, message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render_files(values)


def test_namespaced_scope_objects_land_in_each_watched_namespace() -> None:
    objects = render(SCENARIOS["namespaced"])
    for kind in ("Role", "RoleBinding", "ServiceAccount"):
        namespaces = {o["metadata"]["namespace"] for o in find(objects, kind)}
        assert {"team-a", "team-b"} <= namespaces, kind
    workload = [sa for sa in find(objects, "ServiceAccount", "dockyard-workload")]
    assert {sa["metadata"]["namespace"] for sa in workload} == {"team-a", "team-b"}
    assert all(sa["automountServiceAccountToken"] is False for sa in workload)


def test_notes_tell_the_user_what_to_do_next() -> None:
    notes = render_files()["dockyard/templates/NOTES.txt"]
    assert "kubectl apply -f manifests/examples/" in notes
    assert "port-forward svc/dockyard-mlflow" in notes
    assert "get secret dockyard-mlflow-auth -o jsonpath='{.data.admin-password}'" in notes
    assert "hack/kind-demo.sh" in notes
    external = render_files(SCENARIOS["external-mlflow"])["dockyard/templates/NOTES.txt"]
    assert "https://mlflow.example.com" in external and "mlflow-credentials" in external
