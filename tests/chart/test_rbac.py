"""Least-privilege RBAC: exactly the verbs the operator uses, no wildcards, no Secret reads in bulk."""

from __future__ import annotations

from collections import defaultdict

import pytest

from .chartlib import NAMESPACE, SCENARIOS, find, merge, render

CRUD = {"get", "list", "watch", "create", "patch", "update", "delete"}
READ = {"get", "list", "watch"}

# (apiGroup, resource) -> verbs, for what the operator does inside a watched namespace.
NAMESPACED_RULES: dict[tuple[str, str], set[str]] = {
    ("dockyard.dev", "datasets"): READ | {"patch", "update"},
    ("dockyard.dev", "trainingruns"): READ | {"patch", "update"},
    ("dockyard.dev", "modeldeployments"): READ | {"patch", "update"},
    ("dockyard.dev", "datasets/status"): {"get", "patch", "update"},
    ("dockyard.dev", "trainingruns/status"): {"get", "patch", "update"},
    ("dockyard.dev", "modeldeployments/status"): {"get", "patch", "update"},
    ("batch", "jobs"): READ | {"create", "patch", "delete"},
    ("", "pods"): READ,
    ("", "pods/log"): {"get"},
    ("apps", "deployments"): CRUD,
    ("", "services"): CRUD,
    ("", "configmaps"): CRUD,
    ("", "secrets"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
ROUTER_RULES: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.networking.k8s.io", "httproutes"),
    "istio": ("networking.istio.io", "virtualservices"),
    "seldon": ("machinelearning.seldon.io", "seldondeployments"),
}
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions"): READ}


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


def expected(values: dict) -> dict[tuple[str, str, str], dict[tuple[str, str], set[str]]]:
    routers = {**{"gateway": False, "istio": False, "seldon": False}, **values.get("routers", {})}
    peering = values.get("peering", {}).get("enabled", True)
    namespaced_rules = dict(NAMESPACED_RULES)
    for router, key in ROUTER_RULES.items():
        if routers[router]:
            namespaced_rules[key] = CRUD
    namespaces = values.get("watch", {}).get("namespaces", [])
    if not namespaces:
        cluster = {**namespaced_rules, **CRD_READ, ("", "namespaces"): READ}
        if peering:
            cluster[("kopf.dev", "clusterkopfpeerings")] = READ | {"patch"}
        return {("ClusterRole", "", "dockyard-operator"): cluster}
    out = {("ClusterRole", "", "dockyard-operator-crd-reader"): dict(CRD_READ)}
    for ns in namespaces:
        role = dict(namespaced_rules)
        if peering:
            role[("kopf.dev", "kopfpeerings")] = READ | {"patch"}
        out[("Role", ns, "dockyard-operator")] = role
    return out


VARIANTS = {
    "cluster": {},
    "cluster-all-routers": SCENARIOS["all-routers"],
    "cluster-standalone-seldon": {"peering": {"enabled": False}, "routers": {"seldon": True}},
    "namespaced": SCENARIOS["namespaced"],
    "namespaced-all-routers": SCENARIOS["namespaced-all-routers"],
    "namespaced-standalone-gateway": merge(
        SCENARIOS["namespaced"], {"peering": {"enabled": False}, "routers": {"gateway": True}}
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_rules_are_exactly_what_the_operator_needs(variant: str) -> None:
    values = VARIANTS[variant]
    assert rules_by_role(render(values)) == expected(values)


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
                assert set(rule["verbs"]) == {"get"}, rule
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
        assert enabled[key] == CRUD


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
