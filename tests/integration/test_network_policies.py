"""NetworkPolicies against the real apiserver (docs/network-policies.md): the operator's
``<md>-serving`` is accepted and selects exactly the real variant Pods, its router peer exactly
the real router Pods; switching the setting off deletes it; the chart's policies are accepted.

The local control plane enforces no NetworkPolicy (no CNI): what is tested is that the objects
are valid and that their selectors pick the Pods that really run, which is what an enforcing
CNI acts on.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.chart import chartlib
from tests.integration.fault_support import register_serving_model
from tests.integration.test_serving_path import md, ready
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorFactory

pytestmark = pytest.mark.integration

NETWORKING = "networking.k8s.io/v1"


def selector_query(selector: dict[str, Any]) -> str:
    """A LabelSelector as a list query (only the forms these policies use)."""
    assert set(selector) <= {"matchLabels"}, selector
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))


def pod_owners(kube: KubeEnv, selector: dict[str, Any]) -> set[str]:
    """The Deployments (by ReplicaSet name prefix) whose live Pods ``selector`` picks."""
    pods = kube.list("Pod", label_selector=selector_query(selector))
    return {p["metadata"]["ownerReferences"][0]["name"].rsplit("-", 1)[0] for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def test_serving_policy_selects_the_real_variant_pods_and_goes_when_switched_off(
    kube: KubeEnv, operator_factory: OperatorFactory, mlflow_server: MlflowServer
) -> None:
    model = f"netpol-{uuid.uuid4().hex[:8]}"
    register_serving_model(mlflow_server, model)
    kube.run_pods_instantly()
    operator = operator_factory().start()
    variants = [{"name": "a", "version": "1", "weight": 1}, {"name": "b", "version": "2", "weight": 1}]
    kube.apply(md(model, variants))
    deployment = ready(kube, timeout=90)

    policy = kube.get("NetworkPolicy", "iris-serving", api_version=NETWORKING)
    assert policy is not None, "the apiserver stored the operator's policy"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    spec = policy["spec"]
    assert pod_owners(kube, spec["podSelector"]) == {"iris-a", "iris-b"}, "every variant Pod, not the router"
    router_peer, _prometheus = spec["ingress"]
    (peer,) = router_peer["from"]
    assert pod_owners(kube, peer["podSelector"]) == {"iris-router"}

    operator.stop()
    operator_factory(extra_env={"DOCKYARD_NETWORK_POLICIES": "false"}).start()
    kube.wait_for(lambda: kube.get("NetworkPolicy", "iris-serving", api_version=NETWORKING) is None,
                  timeout=60, message="iris-serving deleted")
    ready(kube)
    assert kube.get("Deployment", "iris-a") is not None, "only the policy goes"


@pytest.mark.parametrize("scenario", ["default", "namespaced", "peers"])
def test_the_charts_policies_are_accepted_by_the_apiserver(kube: KubeEnv, scenario: str) -> None:
    peers = {"networkPolicies": {
        "prometheus": {"peers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}},
                                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]},
        "mlflow": {"extraPeers": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}}}
    values = peers if scenario == "peers" else chartlib.SCENARIOS[scenario]
    policies = chartlib.find(chartlib.render(values, namespace=kube.namespace), "NetworkPolicy")
    assert len(policies) == 2
    for policy in policies:
        created = dry_run_create(kube, policy)
        assert created["spec"] == policy["spec"], "stored as rendered (nothing dropped)"


def test_dry_run_validates(kube: KubeEnv) -> None:
    """The check above means something: the same request with an invalid policy is refused."""
    policy = chartlib.one(chartlib.render(namespace=kube.namespace), "NetworkPolicy", "dockyard-operator")
    policy["spec"]["ingress"][0]["from"] = [{"ipBlock": {"cidr": "not-a-cidr"}}]
    with pytest.raises(ApiException) as err:
        dry_run_create(kube, policy)
    assert err.value.status == 422


def dry_run_create(kube: KubeEnv, obj: dict[str, Any]) -> dict[str, Any]:
    path = kube.cluster.path("NetworkPolicy", kube.namespace, api_version=NETWORKING)
    return kube.cluster.request("POST", path, obj, {"dryRun": "All"})
