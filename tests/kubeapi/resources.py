"""Registry of resource types the emulator serves: built-in kinds and CRD-defined kinds."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    crd: dict[str, Any] | None = None  # set for CRD-defined kinds
    storage_version: bool = True  # the version objects are stored in (one storage per group/plural)
    list_kind: str = ""
    # strategic merge keys for built-ins: {list field name: merge key}
    builtin: bool = True

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``plural.group`` (``trainingruns.dockyard.dev``), or ``plural`` for the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_group(self) -> str:
        """``Kind.group`` as used in error messages (``TrainingRun.dockyard.dev``)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def storage_key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def printer_columns(self) -> list[dict[str, Any]]:
        if not self.crd:
            return []
        for v in self.crd["spec"].get("versions") or []:
            if v.get("name") == self.version:
                return v.get("additionalPrinterColumns") or []
        return []

    def api_resource(self) -> dict[str, Any]:
        res: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ALL_VERBS,
        }
        if self.short_names:
            res["shortNames"] = self.short_names
        if self.categories:
            res["categories"] = self.categories
        return res


def _b(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    status: bool = False,
    short: list[str] | None = None,
    categories: list[str] | None = None,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        status_subresource=status,
        short_names=short or [],
        categories=categories or [],
    )


BUILTINS: list[ResourceType] = [
    _b("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short=["ns"]),
    _b("", "v1", "pods", "Pod", status=True, short=["po"], categories=["all"]),
    _b("", "v1", "services", "Service", status=True, short=["svc"], categories=["all"]),
    _b("", "v1", "endpoints", "Endpoints", short=["ep"]),
    _b("", "v1", "configmaps", "ConfigMap", short=["cm"]),
    _b("", "v1", "secrets", "Secret"),
    _b("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
    _b("", "v1", "events", "Event", short=["ev"]),
    _b("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True, short=["pvc"]),
    _b("", "v1", "nodes", "Node", namespaced=False, status=True, short=["no"]),
    _b("apps", "v1", "deployments", "Deployment", status=True, short=["deploy"], categories=["all"]),
    _b("apps", "v1", "replicasets", "ReplicaSet", status=True, short=["rs"], categories=["all"]),
    _b("apps", "v1", "statefulsets", "StatefulSet", status=True, short=["sts"], categories=["all"]),
    _b("apps", "v1", "daemonsets", "DaemonSet", status=True, short=["ds"], categories=["all"]),
    _b("batch", "v1", "jobs", "Job", status=True, categories=["all"]),
    _b("batch", "v1", "cronjobs", "CronJob", status=True, short=["cj"], categories=["all"]),
    _b("coordination.k8s.io", "v1", "leases", "Lease"),
    _b("events.k8s.io", "v1", "events", "Event", short=["ev"]),
    _b("networking.k8s.io", "v1", "ingresses", "Ingress", status=True, short=["ing"]),
    _b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=["netpol"]),
    _b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status=True, short=["pdb"]),
    _b(
        "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", status=True, short=["hpa"]
    ),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status=True,
        short=["crd", "crds"],
    ),
]

# Preferred versions of built-in groups (for /apis).
GROUP_ORDER = [
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
]


class Registry:
    """Thread-safe registry of served resource types."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}  # crd name -> its types
        for rt in BUILTINS:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    # -- lookups --------------------------------------------------------------------------
    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        with self._lock:
            for rt in self._types.values():
                if rt.group == group and rt.version == version and rt.kind == kind:
                    return rt
        return None

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        with self._lock:
            return [rt for rt in self._types.values() if rt.group == group and rt.plural == plural]

    def groups(self) -> dict[str, list[str]]:
        """group -> versions (preferred first)."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for rt in self._types.values():
                vs = out.setdefault(rt.group, [])
                if rt.version not in vs:
                    vs.append(rt.version)
            # storage/preferred version first for CRDs
            for group, vs in out.items():
                preferred = [
                    rt.version
                    for rt in self._types.values()
                    if rt.group == group and rt.crd and rt.storage_version
                ]
                if preferred and preferred[0] in vs:
                    vs.remove(preferred[0])
                    vs.insert(0, preferred[0])
            return out

    def resources_in(self, group: str, version: str) -> list[ResourceType]:
        with self._lock:
            return [rt for rt in self._types.values() if rt.group == group and rt.version == version]

    # -- CRDs -----------------------------------------------------------------------------
    def add_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        spec = crd["spec"]
        names = spec["names"]
        types = []
        for v in spec.get("versions") or []:
            if not v.get("served", True):
                continue
            types.append(
                ResourceType(
                    group=spec["group"],
                    version=v["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    singular=names.get("singular") or names["kind"].lower(),
                    short_names=list(names.get("shortNames") or []),
                    categories=list(names.get("categories") or []),
                    status_subresource="status" in (v.get("subresources") or {}),
                    crd=crd,
                    storage_version=bool(v.get("storage")),
                    list_kind=names.get("listKind") or "",
                    builtin=False,
                )
            )
        with self._lock:
            self.remove_crd(crd["metadata"]["name"])
            for rt in types:
                self._types[(rt.group, rt.version, rt.plural)] = rt
            self._crd_types[crd["metadata"]["name"]] = types
        return types

    def remove_crd(self, name: str) -> list[ResourceType]:
        with self._lock:
            types = self._crd_types.pop(name, [])
            for rt in types:
                self._types.pop((rt.group, rt.version, rt.plural), None)
            return types
