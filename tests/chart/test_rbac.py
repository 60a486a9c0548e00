"""Least-privilege RBAC: exactly the verbs the operator uses, no wildcards, no Secret reads in bulk."""

from __future__ import annotations

from collections import defaultdict

import pytest

from .chartlib import NAMESPACE, SCENARIOS, find, merge, render

ROUTER_RULES: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.networking.k8s.io", "httproutes"),
    "istio": ("networking.istio.io", "virtualservices"),
    "seldon": ("machinelearning.seldon.io", "seldondeployments"),
}


def rules_by_role(objects: list[dict]) -> dict[tuple[str, str, str], dict[tuple[str, str], set[str]]]:
    """(kind, namespace, name) -> {(apiGroup, resource): verbs}."""
    out: dict[tuple[str, str, str], dict[tuple[str, str], set[str]]] = {}
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        merged: dict[tuple[str, str], set[str]] = defaultdict(set)
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    merged[(group, resource)] |= set(rule["verbs"])
        key = (role["kind"], role["metadata"].get("namespace", ""), role["metadata"]["name"])
        out[key] = dict(merged)
    return out


# Which verbs: tests/integration/test_rbac_in_use.py compares the chart's grants with every
# request the operator made during the integration tier (the apiserver's audit log). Here:
# the two scopes grant the same thing inside a namespace.
@pytest.mark.parametrize("routers", [{}, {"gateway": True, "istio": True, "seldon": True}])
def test_cluster_and_namespaced_scopes_grant_the_same_namespaced_rules(routers: dict) -> None:
    values = {"routers": routers, "leaderElection": {"enabled": False}}
    cluster = rules_by_role(render(values))[("ClusterRole", "", "dockyard-operator")]
    namespaced = rules_by_role(render(merge(values, SCENARIOS["namespaced"])))
    for ns in SCENARIOS["namespaced"]["watch"]["namespaces"]:
        assert namespaced[("Role", ns, "dockyard-operator")] == cluster
    # Nothing cluster-wide in namespaced scope: kopf's namespace/CRD scanning is off.
    assert [k for k in namespaced if k[0] == "ClusterRole"] == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_wildcards_and_no_secret_list_or_watch(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    roles = find(objects, "ClusterRole") + find(objects, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)
            core_or_any = "" in rule["apiGroups"]
            if core_or_any and "secrets" in rule["resources"]:
                # get: a spec's Secret exists; create/patch: the workload MLflow credential
                # (embedded MLflow with auth). Never list or watch: no reading them all.
                assert set(rule["verbs"]) in ({"get"}, {"get", "create", "patch"}), rule
            # No write access to RBAC or escalation-prone resources.
            assert not {
                "roles",
                "clusterroles",
                "rolebindings",
                "clusterrolebindings",
                "serviceaccounts/token",
                "pods/exec",
                "pods/attach",
                "nodes",
            } & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_optional_router_rbac_only_when_enabled() -> None:
    default = rules_by_role(render())[("ClusterRole", "", "dockyard-operator")]
    enabled = rules_by_role(render(SCENARIOS["all-routers"]))[("ClusterRole", "", "dockyard-operator")]
    for key in ROUTER_RULES.values():
        assert key not in default
        assert enabled[key]


def test_bindings_grant_the_roles_to_the_operator_service_account_only() -> None:
    for scenario in ("default", "namespaced"):
        objects = render(SCENARIOS[scenario])
        bindings = find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding")
        assert bindings
        for binding in bindings:
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": "dockyard-operator", "namespace": NAMESPACE}
            ]


def test_workload_service_account_has_no_token_and_no_role() -> None:
    objects = render(SCENARIOS["namespaced"])
    workload = find(objects, "ServiceAccount", "dockyard-workload")
    assert len(workload) == 2
    assert all(sa["automountServiceAccountToken"] is False for sa in workload)
    subjects = [
        s["name"]
        for b in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding")
        for s in b["subjects"]
    ]
    assert "dockyard-workload" not in subjects
