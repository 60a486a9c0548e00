"""Every Pod template the chart renders runs non-root, without privilege escalation."""

from __future__ import annotations

import copy

import pytest

from .chartlib import SCENARIOS, find, one, render
from .podsecurity import assert_pod_security, pod_security_violations, pod_specs


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_chart_pod_template_is_restricted(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    expected = len(find(objects, "Deployment"))
    # The chart's own Pods meet the "restricted" Pod Security Standard and more.
    assert assert_pod_security(objects, strict=True) == expected


def test_mlflow_pod_mounts_no_service_account_token() -> None:
    mlflow = one(render(), "Deployment", "dockyard-mlflow")
    assert_pod_security(mlflow, strict=True, no_service_account_token=True)


def _deployment() -> dict:
    return copy.deepcopy(one(render(), "Deployment", "dockyard-operator"))


def test_checker_catches_root_and_escalation() -> None:
    """The checker itself: each weakened field is reported (so the tests above mean something)."""
    dep = _deployment()
    assert pod_security_violations(dep, strict=True) == []

    weakened = {
        "runAsNonRoot": lambda pod, c: (
            c["securityContext"].pop("runAsNonRoot"),
            pod["securityContext"].pop("runAsNonRoot"),
        ),
        "runAsUser is 0": lambda pod, c: c["securityContext"].update(runAsUser=0),
        "allowPrivilegeEscalation": lambda pod, c: c["securityContext"].pop("allowPrivilegeEscalation"),
        "privileged": lambda pod, c: c["securityContext"].update(privileged=True),
        "adds capabilities": lambda pod, c: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "drop does not contain ALL": lambda pod, c: c["securityContext"]["capabilities"].update(drop=[]),
        "readOnlyRootFilesystem": lambda pod, c: c["securityContext"].update(readOnlyRootFilesystem=False),
        "seccompProfile": lambda pod, c: (
            c["securityContext"].pop("seccompProfile"),
            pod["securityContext"].pop("seccompProfile"),
        ),
        "hostNetwork": lambda pod, c: pod.update(hostNetwork=True),
        "hostPath": lambda pod, c: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    }
    for message, weaken in weakened.items():
        dep = _deployment()
        pod = dep["spec"]["template"]["spec"]
        weaken(pod, pod["containers"][0])
        problems = pod_security_violations(dep, strict=True)
        assert any(message in p for p in problems), (message, problems)

    # A container-level runAsNonRoot overrides the Pod's.
    dep = _deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    assert any("runAsNonRoot" in p for p in pod_security_violations(dep))
    # Init containers are checked too.
    dep = _deployment()
    dep["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "x"}]
    assert any("initContainers[init]" in p for p in pod_security_violations(dep))


def test_checker_finds_pod_templates_in_every_workload_kind() -> None:
    pod = {"containers": [{"name": "c"}]}
    objs = [
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": pod},
        {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": pod}}},
        {
            "kind": "CronJob",
            "metadata": {"name": "cj"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}},
        },
        {"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": pod}}},
        {
            "kind": "SeldonDeployment",
            "metadata": {"name": "sd"},
            "spec": {
                "predictors": [
                    {"name": "a", "componentSpecs": [{"spec": pod}]},
                    {"name": "b", "componentSpecs": [{"spec": pod}]},
                ]
            },
        },
        {"kind": "ConfigMap", "metadata": {"name": "cm"}},
    ]
    assert sum(1 for o in objs for _ in pod_specs(o)) == 6
    with pytest.raises(AssertionError, match="allowPrivilegeEscalation"):
        assert_pod_security(objs)
    with pytest.raises(AssertionError, match="at least 1 Pod template"):
        assert_pod_security([objs[-1]])
