"""Reusable Pod-template security checks.

Used by the chart tests on every rendered object, and meant for the operator's builders too:

    from tests.chart.podsecurity import assert_pod_security, pod_security_violations

    assert_pod_security([job, deployment, seldon_deployment])          # baseline rules
    assert_pod_security(objs, strict=True)                              # + RO root fs, drop ALL, seccomp
    problems = pod_security_violations(deployment, read_only_root_filesystem=True)

Baseline (always checked), for every container, init container and ephemeral container:
  * runs as non-root: `runAsNonRoot: true` in the container's or the Pod's securityContext
    (the container's value wins), and no effective `runAsUser: 0`;
  * `allowPrivilegeEscalation: false` set explicitly on the container;
  * not `privileged`, adds no capabilities;
  * the Pod uses no hostNetwork/hostPID/hostIPC and no hostPath volume.
Opt-in (each a keyword, all on with strict=True): read-only root filesystem, capabilities
drop ALL, seccomp RuntimeDefault/Localhost (container or Pod level), no service-account
token mounted (`automountServiceAccountToken: false`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# kind -> path (list of keys) from the object to its Pod spec.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind', '?')}/{ns + '/' if ns else ''}{meta.get('name', '?')}"


def pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield (where, podSpec) for every Pod template in a Kubernetes object.

    Knows Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
    CronJob, PodTemplate and SeldonDeployment (every predictor's componentSpecs). Other kinds
    yield nothing.
    """
    kind = obj.get("kind", "")
    if kind in _POD_SPEC_PATHS:
        node: Any = obj
        for key in _POD_SPEC_PATHS[kind]:
            node = (node or {}).get(key)
        if node is not None:
            yield _name(obj), node
    elif kind == "SeldonDeployment":
        for p_index, predictor in enumerate((obj.get("spec") or {}).get("predictors") or []):
            for c_index, component in enumerate(predictor.get("componentSpecs") or []):
                if component.get("spec") is not None:
                    where = (
                        f"{_name(obj)} predictor {predictor.get('name', p_index)} componentSpecs[{c_index}]"
                    )
                    yield where, component["spec"]


def _containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for list_name in _CONTAINER_LISTS:
        for container in pod_spec.get(list_name) or []:
            yield f"{list_name}[{container.get('name', '?')}]", container


def pod_spec_violations(
    pod_spec: Mapping[str, Any],
    *,
    where: str = "pod",
    read_only_root_filesystem: bool = False,
    drop_all_capabilities: bool = False,
    seccomp: bool = False,
    no_service_account_token: bool = False,
) -> list[str]:
    """Security problems of one Pod spec, as human-readable strings (empty: compliant)."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"{where}: {flag} is true")
    for volume in pod_spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"{where}: volume {volume.get('name')} is a hostPath")
    if no_service_account_token and pod_spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")

    containers = list(_containers(pod_spec))
    if not containers:
        problems.append(f"{where}: no containers")
    for cname, container in containers:
        at = f"{where} {cname}"
        sc = container.get("securityContext") or {}

        def effective(key: str) -> Any:
            return sc[key] if key in sc else pod_sc.get(key)

        if effective("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true (container or Pod securityContext)")
        if effective("runAsUser") == 0:
            problems.append(f"{at}: runAsUser is 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        capabilities = sc.get("capabilities") or {}
        if capabilities.get("add"):
            problems.append(f"{at}: adds capabilities {capabilities['add']}")
        if drop_all_capabilities and "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}: capabilities.drop does not contain ALL")
        if read_only_root_filesystem and sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem is not true")
        if seccomp:
            profile = effective("seccompProfile") or {}
            if profile.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{at}: seccompProfile is not RuntimeDefault/Localhost")
    return problems


def pod_security_violations(
    objects: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    strict: bool = False,
    read_only_root_filesystem: bool | None = None,
    drop_all_capabilities: bool | None = None,
    seccomp: bool | None = None,
    no_service_account_token: bool = False,
) -> list[str]:
    """Problems in every Pod template of one object or of several.

    `strict=True` turns on read_only_root_filesystem, drop_all_capabilities and seccomp
    (each can still be set explicitly). no_service_account_token is always opt-in.
    """
    if isinstance(objects, Mapping):
        objects = [objects]

    def pick(value: bool | None) -> bool:
        return strict if value is None else value

    problems: list[str] = []
    for obj in objects:
        for where, spec in pod_specs(obj):
            problems += pod_spec_violations(
                spec,
                where=where,
                read_only_root_filesystem=pick(read_only_root_filesystem),
                drop_all_capabilities=pick(drop_all_capabilities),
                seccomp=pick(seccomp),
                no_service_account_token=no_service_account_token,
            )
    return problems


def assert_pod_security(
    objects: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    strict: bool = False,
    read_only_root_filesystem: bool | None = None,
    drop_all_capabilities: bool | None = None,
    seccomp: bool | None = None,
    no_service_account_token: bool = False,
    min_pod_templates: int = 1,
) -> int:
    """Assert every Pod template complies; returns how many Pod templates were checked.

    Fails too when fewer than `min_pod_templates` Pod templates were found (so a test can't
    pass by checking nothing).
    """
    objs = [objects] if isinstance(objects, Mapping) else list(objects)
    count = sum(1 for obj in objs for _ in pod_specs(obj))
    assert count >= min_pod_templates, f"expected at least {min_pod_templates} Pod template(s), found {count}"
    problems = pod_security_violations(
        objs,
        strict=strict,
        read_only_root_filesystem=read_only_root_filesystem,
        drop_all_capabilities=drop_all_capabilities,
        seccomp=seccomp,
        no_service_account_token=no_service_account_token,
    )
    assert not problems, "Pod security violations:\n  " + "\n  ".join(problems)
    return count
