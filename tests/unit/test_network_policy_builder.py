"""Unit tests for dockyard.builders.network (the NetworkPolicy over a ModelDeployment's serving
Pods) and its settings (DOCKYARD_NETWORK_POLICY*). The real apiserver checks the same objects in
tests/integration/test_network_policies.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.builders.network import build_network_policy, network_policy_name
from dockyard.builders.serving import desired_serving_children
from dockyard.config import DEFAULT_PROMETHEUS_PEER, OperatorConfig, parse_bool, parse_peers
from dockyard.labels import SPEC_HASH_ANNOTATION, content_hash
from dockyard.runtime.serve import runtime_ports
from tests.labelselector import matches

OWNER: dict[str, Any] = {
    "apiVersion": "dockyard.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "0b9c6d1e-0000-4000-8000-000000000001"},
}
CFG = OperatorConfig()
RESOLVED = {"a": "3", "b": "4"}


def spec(router: dict[str, Any] | None = None, runtime: str = "mlserver") -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({
        "modelName": "iris-classifier",
        "runtime": runtime,
        "variants": [{"name": "a", "version": "3", "weight": 1}, {"name": "b", "version": "4", "weight": 1}],
        "router": router or {"type": "builtin"},
    })


def pod_labels(children: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Deployment name -> the labels its Pods get."""
    return {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in children if o["kind"] == "Deployment"}


def test_builtin_policy_selects_the_variant_pods_and_admits_only_the_router_and_prometheus() -> None:
    s = spec()
    policy = build_network_policy(OWNER, s, CFG)
    assert policy is not None
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == network_policy_name("iris") == "iris-serving"
    assert policy["metadata"]["namespace"] == "ml"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
    body = policy["spec"]
    assert body["policyTypes"] == ["Ingress"]

    pods = pod_labels(desired_serving_children(OWNER, s, RESOLVED, CFG))
    assert set(pods) == {"iris-a", "iris-b", "iris-router"}
    selected = {name for name, labels in pods.items() if matches(body["podSelector"], labels)}
    assert selected == {"iris-a", "iris-b"}, "every variant Pod, not the router"

    router_rule, prometheus_rule = body["ingress"]
    ports = runtime_ports("mlserver")
    assert router_rule["ports"] == [{"protocol": "TCP", "port": ports["http"]},
                                    {"protocol": "TCP", "port": ports["grpc"]}]
    (peer,) = router_rule["from"]
    assert set(peer) == {"podSelector"}, "same namespace only"
    assert {name for name, labels in pods.items() if matches(peer["podSelector"], labels)} == {"iris-router"}
    assert prometheus_rule == {"from": [DEFAULT_PROMETHEUS_PEER],
                               "ports": [{"protocol": "TCP", "port": ports["metrics"]}]}


def test_other_deployments_router_is_not_this_ones() -> None:
    """The router peer names its ModelDeployment: iris2's router may not call iris's variants."""
    other = {**OWNER, "metadata": {**OWNER["metadata"], "name": "iris2", "uid": "other"}}
    policy = build_network_policy(OWNER, spec(), CFG)
    assert policy is not None
    peer = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    others = pod_labels(desired_serving_children(other, spec(), RESOLVED, CFG))
    assert not any(matches(peer, labels) for labels in others.values())
    assert not any(matches(policy["spec"]["podSelector"], labels) for labels in others.values())


def test_seldon_runtime_exposes_only_http_to_the_router() -> None:
    policy = build_network_policy(OWNER, spec(runtime="seldon"), CFG)
    assert policy is not None
    ports = runtime_ports("seldon")
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": ports["http"]}]
    assert policy["spec"]["ingress"][1]["ports"] == [{"protocol": "TCP", "port": ports["metrics"]}]


def test_gateway_router_is_the_gateways_namespaces_by_default() -> None:
    router = {"type": "gateway", "gateway": {"parentRefs": [
        {"name": "gw", "namespace": "infra"}, {"name": "local"}, {"name": "gw2", "namespace": "infra"}]}}
    policy = build_network_policy(OWNER, spec(router), CFG)
    assert policy is not None
    assert policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["infra", "ml"]}]}}]


def test_istio_router_is_the_deployments_namespace_by_default() -> None:
    policy = build_network_policy(OWNER, spec({"type": "istio"}), CFG)
    assert policy is not None
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


@pytest.mark.parametrize("router", [{"type": "istio"}, {"type": "gateway", "gateway": {"parentRefs": [{"name": "g"}]}}])
def test_configured_router_peers_replace_the_defaults(router: dict[str, Any]) -> None:
    peers = ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
              "podSelector": {"matchLabels": {"istio": "ingressgateway"}}},)
    cfg = OperatorConfig(network_policy_router_peers=peers)
    policy = build_network_policy(OWNER, spec(router), cfg)
    assert policy is not None
    assert policy["spec"]["ingress"][0]["from"] == list(peers)
    policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["istio"] = "changed"
    assert peers[0]["podSelector"]["matchLabels"]["istio"] == "ingressgateway", "the settings are not shared"


def test_builtin_router_ignores_the_router_peers_setting() -> None:
    cfg = OperatorConfig(network_policy_router_peers=({"namespaceSelector": {}},))
    assert build_network_policy(OWNER, spec(), cfg) == build_network_policy(OWNER, spec(), CFG)


def test_no_prometheus_peers_means_no_metrics_rule() -> None:
    policy = build_network_policy(OWNER, spec(), OperatorConfig(network_policy_prometheus_peers=()))
    assert policy is not None and len(policy["spec"]["ingress"]) == 1


def test_none_when_disabled_or_seldon_runs_the_pods() -> None:
    assert build_network_policy(OWNER, spec(), OperatorConfig(network_policies=False)) is None
    assert build_network_policy(OWNER, spec({"type": "seldon"}), CFG) is None


def test_spec_hash_is_stamped_and_the_build_is_deterministic() -> None:
    policy = build_network_policy(OWNER, spec(), CFG)
    assert policy is not None
    clone = copy.deepcopy(policy)
    stamped = clone["metadata"]["annotations"].pop(SPEC_HASH_ANNOTATION)
    assert stamped == content_hash(clone)
    assert policy == build_network_policy(OWNER, spec(), CFG)
    # Weights are not in it: a weight change never rewrites the policy.
    heavier = spec().model_copy(update={"variants": [v.model_copy(update={"weight": 9}) for v in spec().variants]})
    assert build_network_policy(OWNER, heavier, CFG) == policy


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CFG.network_policies is True
    assert CFG.network_policy_prometheus_peers == (DEFAULT_PROMETHEUS_PEER,)
    peers = [{"namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {}}]
    monkeypatch.setenv("DOCKYARD_NETWORK_POLICIES", "false")
    monkeypatch.setenv("DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS", json.dumps(peers))
    monkeypatch.setenv("DOCKYARD_NETWORK_POLICY_ROUTER_PEERS", json.dumps(peers))
    cfg = OperatorConfig.from_env()
    assert cfg.network_policies is False
    assert cfg.network_policy_prometheus_peers == tuple(peers) == cfg.network_policy_router_peers


@pytest.mark.parametrize("value", ["{}", "[1]", "[{}]", '[{"podSelectr": {}}]', '[{"podSelector": []}]', "nope"])
def test_malformed_peers_stop_the_operator(value: str) -> None:
    with pytest.raises(ValueError, match="DOCKYARD_NETWORK_POLICY_ROUTER_PEERS"):
        parse_peers(value, "DOCKYARD_NETWORK_POLICY_ROUTER_PEERS")


def test_bool_setting() -> None:
    assert parse_bool("True", "X") and not parse_bool("false", "X") and not parse_bool("0", "X")
    with pytest.raises(ValueError, match="X"):
        parse_bool("maybe", "X")
