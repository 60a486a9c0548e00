"""RBAC for real: what the operator called, from the apiserver's audit log, against what the
chart grants.

The local control plane's apiserver records every request made by a ServiceAccount of the
operator's namespace (audit level Metadata). Every integration test runs the operator under
the chart's own ServiceAccount and RBAC, so after the integration tier the log holds each
(API group, resource, verb) the operator needed. This test runs last
(``tests/plugins/session_order.py``) and checks:

* no request of the operator was refused with 403, in the whole session;
* every verb the operator used is granted by the chart (the namespaced rules, which both the
  cluster-scope ClusterRole and the per-namespace Roles carry);
* when the whole integration tier ran: every verb the chart grants was used, apart from the
  grants that admission checks need and that therefore never show up as a request
  (``ADMISSION_ONLY``) and the leader-election Lease rules when no test in the session elected a leader.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.chart import chartlib
from tests.plugins.kube import OPERATOR_CHART_VALUES, OPERATOR_NAMESPACE, OPERATOR_RELEASE, KubeCluster

pytestmark = [pytest.mark.integration, pytest.mark.rbac_audit]

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
ADMISSION_REFUSED = -403  # a 403 after RBAC allowed the request (ResourceQuota, admission webhooks)

# Checked by admission, not called: OwnerReferencesPermissionEnforcement lets a client set
# blockOwnerDeletion on a child only if it may update the owner's finalizers.
ADMISSION_ONLY: set[Grant] = {
    ("dockyard.dev", f"{plural}/finalizers", "update") for plural in ("datasets", "trainingruns", "modeldeployments")
}
# The integration files whose operators between them exercise every code path that talks to
# the API. If any of them did not run in this session, "granted but unused" is not judged.
COVERAGE_FILES = {
    "test_training_path.py", "test_training_exactly_once.py", "test_serving_path.py", "test_bad_input.py",
    "test_fault_survival.py", "test_registry_auth.py", "test_distributed_backends.py",
}


def operator_requests(audit_log: Path, user: str, since: float = 0.0) -> dict[Grant, dict[int, int]]:
    """(group, resource, verb) -> {response code: count} of one user's requests received at or
    after ``since`` (a reused cluster's log also holds earlier sessions, with other charts)."""
    out: dict[Grant, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    with open(audit_log) as f:
        for line in f:
            event = json.loads(line)
            if event.get("user", {}).get("username") != user or event.get("stage") != "ResponseComplete":
                continue
            received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if received.timestamp() < since:
                continue
            ref = event.get("objectRef") or {}
            if not ref.get("resource"):
                continue  # discovery and /version: non-resource URLs, allowed to every user
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            code = int((event.get("responseStatus") or {}).get("code") or 0)
            if code == 403 and (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "allow":
                code = ADMISSION_REFUSED  # RBAC allowed it; a quota or admission plugin said no
            out[(ref.get("apiGroup") or "", resource, event["verb"])][code] += 1
            if event["verb"] == "patch" and code == 201:
                # A server-side apply that created the object: authorized as `create` too.
                out[(ref.get("apiGroup") or "", resource, "create")][code] += 1
    return out


def granted(role_name: str, objects: list[dict]) -> set[Grant]:
    """The ClusterRole's grants plus the leader-election Role's (in the release namespace)."""
    roles = [chartlib.one(objects, "ClusterRole", role_name)]
    roles += [r for r in chartlib.find(objects, "Role") if r["metadata"]["name"] == f"{role_name}-leader-election"]
    return {
        (group, resource, verb)
        for role in roles
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_operator_rbac_is_exactly_what_it_uses(kube_cluster: KubeCluster, passed_test_files: set[str]) -> None:
    if kube_cluster.local is None:
        pytest.skip("needs the local control plane's audit log (--cluster=controlplane)")
    kube_cluster.operator_kubeconfig()  # the identity exists even if no operator test ran
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_RELEASE}-operator"
    used = operator_requests(Path(kube_cluster.local.audit_log), user, since=kube_cluster.session_started)
    if not used:
        pytest.skip("no operator ran in this session")
    forbidden = {g: codes[403] for g, codes in used.items() if codes.get(403)}
    assert forbidden == {}, f"the apiserver refused the operator: {forbidden}"

    objects = chartlib.render(OPERATOR_CHART_VALUES, namespace=OPERATOR_NAMESPACE, release=OPERATOR_RELEASE)
    grants = granted(f"{OPERATOR_RELEASE}-operator", objects)
    missing = sorted(set(used) - grants)
    assert missing == [], f"used but not granted: {missing}"

    not_run = COVERAGE_FILES - passed_test_files
    if not_run:
        pytest.skip(f"granted-but-unused is judged only after the whole integration tier; not run: {sorted(not_run)}")
    unused = sorted(grants - set(used) - ADMISSION_ONLY)
    assert unused == [], f"granted but never used by the operator (remove from the chart or test the path): {unused}"


def test_child_watches_filter_on_the_server(kube_cluster: KubeCluster) -> None:
    """The operator lists and watches only its own Jobs and Deployments (a label selector in the
    request), not every Job and Deployment of the cluster."""
    if kube_cluster.local is None:
        pytest.skip("needs the local control plane's audit log (--cluster=controlplane)")
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_RELEASE}-operator"
    unfiltered, seen = [], 0
    with open(kube_cluster.local.audit_log) as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("user", {}).get("username") != user or event.get("stage") != "ResponseComplete"
                    or ref.get("resource") not in ("jobs", "deployments") or event["verb"] not in ("list", "watch")):
                continue
            received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if received.timestamp() < kube_cluster.session_started:
                continue
            seen += 1
            if "labelSelector=" not in event["requestURI"]:
                unfiltered.append(event["requestURI"])
    if not seen:
        pytest.skip("no operator ran in this session")
    assert unfiltered == []
