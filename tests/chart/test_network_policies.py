"""The chart's NetworkPolicies (docs/network-policies.md) select the Pods they are about and
admit the Pods they should: the chart's own Pods by the chart's labels, the operator's Pods by
the labels dockyard.labels gives them. The real apiserver accepts them in
tests/integration/test_network_policies.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard.api.dataset import DatasetSpec
from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.builders.serving import desired_serving_children
from dockyard.builders.training import build_profile_job, build_training_job
from dockyard.config import DEFAULT_PROMETHEUS_PEER, OperatorConfig, parse_bool, parse_peers
from dockyard.labels import mlflow_client_pod_selector
from tests.labelselector import matches

from .chartlib import SCENARIOS, find, one, render

pytest.importorskip("helm_python")

CFG = OperatorConfig()
OPERATOR_POLICY = "dockyard-operator"
MLFLOW_POLICY = "dockyard-mlflow"


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Workload name -> the labels of the Pods it creates."""
    return {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in objects if o["kind"] in ("Deployment", "Job")}


def selected(selector: dict[str, Any], pods: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, labels in pods.items() if matches(selector, labels)}


def container_port(objects: list[dict[str, Any]], deployment: str, port_name: str) -> int:
    dep = one(objects, "Deployment", deployment)
    ports = {p["name"]: p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    return int(ports[port_name])


def operator_pods() -> dict[str, dict[str, str]]:
    """The Pods the operator creates: profiling and training Jobs, variant and router Pods."""
    def owner(kind: str) -> dict[str, Any]:
        return {"apiVersion": "dockyard.dev/v1alpha1", "kind": kind,
                "metadata": {"name": "iris", "namespace": "team-a", "uid": "u"}}

    dataset = DatasetSpec.model_validate({"source": {"uri": "s3://data/iris.csv"}, "schema": {"target": "y"}})
    run = TrainingRunSpec.model_validate({
        "datasetRef": {"name": "iris"}, "modelName": "m",
        "trainer": {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}}})
    md = ModelDeploymentSpec.model_validate({
        "modelName": "m", "variants": [{"name": "a", "version": "1", "weight": 1}]})
    return pod_labels([
        build_profile_job(owner("Dataset"), dataset, job_name="iris-profile", cfg=CFG),
        build_training_job(owner("TrainingRun"), run, dataset, attempt=1, run_id="r", experiment_id="1",
                           dataset_version="sha256:" + "0" * 64, cfg=CFG),
        *desired_serving_children(owner("ModelDeployment"), md, {"a": "1"}, CFG),
    ])


def test_default_render_fences_the_operator_metrics_port_to_prometheus() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy", OPERATOR_POLICY)["spec"]
    assert selected(policy["podSelector"], pod_labels(objects)) == {"dockyard-operator"}
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{
        "from": [DEFAULT_PROMETHEUS_PEER],  # the operator's own default for the serving Pods too
        "ports": [{"protocol": "TCP", "port": container_port(objects, "dockyard-operator", "metrics")}],
    }]


def test_default_render_admits_only_the_operator_and_its_mlflow_clients_to_mlflow() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy", MLFLOW_POLICY)["spec"]
    assert selected(policy["podSelector"], pod_labels(objects)) == {"dockyard-mlflow"}
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": container_port(objects, "dockyard-mlflow", "http")}]
    operator_peer, workload_peer = rule["from"]
    assert set(operator_peer) == {"podSelector"}, "the operator, in the release namespace"
    assert selected(operator_peer["podSelector"], pod_labels(objects)) == {"dockyard-operator"}
    # One definition of "the Pods that call MLflow": the operator's labels module.
    assert workload_peer == {"namespaceSelector": {}, "podSelector": mlflow_client_pod_selector()}
    assert selected(workload_peer["podSelector"], operator_pods()) == {"iris-train-1", "iris-a"}
    assert not selected(workload_peer["podSelector"], pod_labels(objects)), "not the chart's own Pods"


def test_the_mlflow_client_selector_is_exactly_the_trainer_and_serving_pods() -> None:
    pods = operator_pods()
    assert set(pods) == {"iris-profile", "iris-train-1", "iris-a", "iris-router"}
    assert selected(mlflow_client_pod_selector(), pods) == {"iris-train-1", "iris-a"}


def test_namespaced_scope_admits_mlflow_clients_of_the_watched_namespaces_only() -> None:
    objects = render(SCENARIOS["namespaced"])
    (rule,) = one(objects, "NetworkPolicy", MLFLOW_POLICY)["spec"]["ingress"]
    assert rule["from"][1]["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}


def test_peer_values_reach_the_policies_and_the_operator() -> None:
    prometheus = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    router = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}}}]
    extra = [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    objects = render({"networkPolicies": {"prometheus": {"peers": prometheus}, "routerPeers": router,
                                          "mlflow": {"extraPeers": extra}}})
    assert one(objects, "NetworkPolicy", OPERATOR_POLICY)["spec"]["ingress"][0]["from"] == prometheus
    assert one(objects, "NetworkPolicy", MLFLOW_POLICY)["spec"]["ingress"][0]["from"][2:] == extra
    env = operator_env(objects)
    assert parse_bool(env["DOCKYARD_NETWORK_POLICIES"], "x") is True
    assert list(parse_peers(env["DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS"], "x")) == prometheus
    assert list(parse_peers(env["DOCKYARD_NETWORK_POLICY_ROUTER_PEERS"], "x")) == router


def test_no_prometheus_peers_closes_the_metrics_port() -> None:
    objects = render({"networkPolicies": {"prometheus": {"peers": []}}})
    assert one(objects, "NetworkPolicy", OPERATOR_POLICY)["spec"]["ingress"] == []
    assert json.loads(operator_env(objects)["DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS"]) == []


def test_default_operator_settings_match_the_chart_defaults() -> None:
    env = operator_env(render())
    assert parse_bool(env["DOCKYARD_NETWORK_POLICIES"], "x") is CFG.network_policies is True
    assert parse_peers(env["DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS"], "x") == CFG.network_policy_prometheus_peers
    assert parse_peers(env["DOCKYARD_NETWORK_POLICY_ROUTER_PEERS"], "x") == CFG.network_policy_router_peers == ()


def test_disabled_renders_no_policy_and_tells_the_operator() -> None:
    objects = render({"networkPolicies": {"enabled": False}})
    assert find(objects, "NetworkPolicy") == []
    assert parse_bool(operator_env(objects)["DOCKYARD_NETWORK_POLICIES"], "x") is False


def test_an_external_mlflow_gets_no_policy() -> None:
    objects = render(SCENARIOS["external-mlflow"])
    assert [p["metadata"]["name"] for p in find(objects, "NetworkPolicy")] == [OPERATOR_POLICY]


def test_the_operator_may_manage_networkpolicies_even_when_disabled() -> None:
    """Turning the setting off makes the operator delete the policies it made."""
    role = one(render({"networkPolicies": {"enabled": False}}), "ClusterRole", "dockyard-operator")
    rules = [r for r in role["rules"] if "networkpolicies" in r["resources"]]
    assert rules and rules[0]["apiGroups"] == ["networking.k8s.io"]
    assert set(rules[0]["verbs"]) == {"get", "list", "create", "patch", "delete"}


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(objects, "Deployment", "dockyard-operator")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
