"""Kubernetes for the tests: the real control plane (default) or any cluster.

Which cluster (``--cluster`` or ``DOCKYARD_TEST_CLUSTER``):

* ``controlplane`` (default): the real kube-apiserver, controller-manager, scheduler, etcd,
  kube-proxy and CoreDNS built from the Go module proxy, with the node agent running Pods as
  local processes (``tests/localcluster``). A cluster already started with
  ``hack/controlplane.sh up`` is reused; otherwise one is started for the session and
  stopped at its end. Needs root (Pod network namespaces).
* ``kubeconfig``: the cluster of ``DOCKYARD_TEST_KUBECONFIG`` (kind, for instance); setting
  that variable alone selects this. Tests that need fault injection, instant Pods, the audit
  log or ClusterIP traffic from this machine skip there, with the reason.

Fixtures:
  kube_cluster  session-scoped :class:`KubeCluster`; the CRDs from ``crds/`` are applied with
                server-side apply and waited for ``Established``.
  kube          function-scoped :class:`KubeEnv`: the cluster plus a fresh namespace for this
                test (deleted afterwards; labelled Pod Security ``restricted``) and small helpers.
  ns            the test's namespace name (``kube.namespace``).

``kube_cluster.operator_kubeconfig()`` is the credential operators under test run with: a
token of the chart's ServiceAccount bound by the chart's own RBAC, so RBAC is tested for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

ENV_KUBECONFIG = "DOCKYARD_TEST_KUBECONFIG"
ENV_CLUSTER = "DOCKYARD_TEST_CLUSTER"
CLUSTER_KINDS = ("controlplane", "kubeconfig")
# The tests' operator identity: the chart rendered as release "dockyard-tests" in its own
# namespace, so it never collides with a chart installed by hack/demo.sh (release "dockyard").
OPERATOR_RELEASE = "dockyard-tests"
OPERATOR_NAMESPACE = "dockyard-tests"
# The chart values of the operator identity the tests run with: every router and training
# backend on, since the tests exercise them all.
OPERATOR_CHART_VALUES = {
    "routers": {"gateway": True, "istio": True, "seldon": True},
    "trainingBackends": {"trainjob": True, "rayjob": True},
}
OPERATOR_SERVICE_ACCOUNT = f"{OPERATOR_RELEASE}-operator"
POD_SECURITY_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
FIELD_MANAGER = "dockyard-tests"

Obj = dict[str, Any]
T = TypeVar("T")

# kind -> (apiVersion, plural, namespaced) for built-ins the project touches; CRDs from crds/
# are added below; anything else is found through discovery.
_KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("v1", "namespaces", False),
    "Pod": ("v1", "pods", True),
    "Service": ("v1", "services", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Secret": ("v1", "secrets", True),
    "Event": ("v1", "events", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "Deployment": ("apps/v1", "deployments", True),
    "ReplicaSet": ("apps/v1", "replicasets", True),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "Job": ("batch/v1", "jobs", True),
    "Lease": ("coordination.k8s.io/v1", "leases", True),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices", True),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
}


def _load_crd_kinds() -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            versions = spec.get("versions") or []
            version = next((v["name"] for v in versions if v.get("storage")), versions[0]["name"])
            _KINDS[spec["names"]["kind"]] = (
                f"{spec['group']}/{version}",
                spec["names"]["plural"],
                spec.get("scope", "Namespaced") == "Namespaced",
            )


_load_crd_kinds()


def has_condition(obj: Obj | None, ctype: str, status: str = "True") -> bool:
    """``obj.status.conditions`` has a condition ``ctype`` with ``status``."""
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == ctype and c.get("status") == status for c in conds)


def condition(obj: Obj | None, ctype: str) -> Obj | None:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == ctype), None)


# --------------------------------------------------------------------------------------------


class KubeCluster:
    """One API server for the session: the local control plane or another cluster."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        kind: str = "kubeconfig",
        local: Any = None,
        on_close: Callable[[], None] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.kind = kind
        self.session_started = time.time()  # audit events before this belong to another session
        # tests.localcluster.controlplane.ClusterState of the local control plane, else None.
        self.local = local
        self._on_close = on_close
        self.workdir = workdir or Path(self.kubeconfig).parent
        self.api: k8s_client.ApiClient = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        self._resources: dict[tuple[str | None, str], tuple[str, str, bool]] = {}
        self._operator_kubeconfig: Path | None = None
        # The fault proxy (tests.localcluster.faultproxy) operators talk through, on the local
        # control plane.
        self.proxy: Any = None

    @property
    def faults(self) -> Any:
        """Fault injection for the operator's API requests (None on another cluster)."""
        return self.proxy.faults if self.proxy is not None else None

    @property
    def counters(self) -> Any:
        """Request counters by (verb, resource) of the operator's own requests (through the fault
        proxy) on the local control plane; None on another cluster."""
        return self.proxy.counters if self.proxy is not None else None

    def close(self) -> None:
        self.api.close()
        if self.proxy is not None:
            self.proxy.stop()
        if self._on_close is not None:
            self._on_close()

    @property
    def node_ip(self) -> str | None:
        """Where Pods reach host processes (MLflow in tests): the local node's address."""
        return self.local.node_ip if self.local is not None else None

    def operator_kubeconfig(self) -> Path:
        """The credential an operator under test uses: the chart's ServiceAccount with the
        chart's RBAC for OPERATOR_CHART_VALUES, through a token from the TokenRequest API."""
        if self._operator_kubeconfig is None:
            self._operator_kubeconfig = self._make_operator_identity()
        return self._operator_kubeconfig

    def _make_operator_identity(self) -> Path:
        from tests.chart import chartlib

        objects = chartlib.render(
            OPERATOR_CHART_VALUES, namespace=OPERATOR_NAMESPACE, release=OPERATOR_RELEASE,
        )
        rbac = [o for o in objects if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                     "Role", "RoleBinding")]
        sa = next(o for o in rbac if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == OPERATOR_SERVICE_ACCOUNT)
        try:
            self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": OPERATOR_NAMESPACE}})
        except ApiException as e:
            if e.status != 409:
                raise
        for obj in rbac:
            ns = obj["metadata"].get("namespace") or (OPERATOR_NAMESPACE if obj["kind"] in
                                                      ("ServiceAccount", "Role", "RoleBinding") else None)
            self.request(
                "PATCH", self.path(obj["kind"], ns, obj["metadata"]["name"], obj["apiVersion"]), obj,
                {"fieldManager": FIELD_MANAGER, "force": "true"}, "application/apply-patch+yaml",
            )
        token = self.request(
            "POST",
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{sa['metadata']['name']}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 24 * 3600}},
        )["status"]["token"]
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        if self.proxy is not None:  # through the fault proxy (plain HTTP on loopback)
            cluster = {"name": "proxy", "cluster": {"server": self.proxy.url}}
        out = {
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [cluster],
            "users": [{"name": "dockyard-operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "dockyard-operator"}}],
        }
        path = self.workdir / "operator.kubeconfig"
        path.write_text(yaml.safe_dump(out))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------ raw REST

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        """One API request through the ordinary client; JSON response as a dict.
        Raises ``kubernetes.client.exceptions.ApiException`` on an error status."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        m, url, h, b, pp = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(m, url, header_params=h, body=b, post_params=pp, _request_timeout=30)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=data.decode(errors="replace"), data=None)
        return json.loads(data) if data else {}

    # ------------------------------------------------------------ kinds -> paths

    def resource(self, kind: str, api_version: str | None = None) -> tuple[str, str, bool]:
        """(apiVersion, plural, namespaced) for ``kind``; built-ins, crds/, then discovery."""
        if kind in _KINDS and (api_version is None or _KINDS[kind][0] == api_version):
            return _KINDS[kind]
        key = (api_version, kind)
        if key not in self._resources:
            versions = [api_version] if api_version else self._all_group_versions()
            for gv in versions:
                found = self._discover(gv, kind)
                if found:
                    self._resources[key] = found
                    break
            else:
                raise LookupError(f"kind {kind!r} (apiVersion {api_version}) is not served")
        return self._resources[key]

    def _all_group_versions(self) -> list[str]:
        out = ["v1"]
        for g in self.request("GET", "/apis").get("groups") or []:
            pref = (g.get("preferredVersion") or {}).get("groupVersion")
            out += [pref] if pref else []
            out += [v["groupVersion"] for v in g.get("versions") or [] if v["groupVersion"] != pref]
        return out

    def _discover(self, gv: str, kind: str) -> tuple[str, str, bool] | None:
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        try:
            lst = self.request("GET", path)
        except ApiException:
            return None
        for r in lst.get("resources") or []:
            if r.get("kind") == kind and "/" not in r["name"]:
                return gv, r["name"], bool(r.get("namespaced"))
        return None

    def path(
        self,
        kind: str,
        namespace: str | None = None,
        name: str | None = None,
        api_version: str | None = None,
        subresource: str | None = None,
    ) -> str:
        gv, plural, namespaced = self.resource(kind, api_version)
        p = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        if namespaced and namespace:
            p += f"/namespaces/{namespace}"
        p += f"/{plural}"
        if name:
            p += f"/{name}"
        if subresource:
            p += f"/{subresource}"
        return p

    def apply_crds(self, timeout: float = 60.0, extra: list[Obj] | None = None) -> None:
        """Server-side apply the CRDs of ``crds/`` (plus ``extra``) and wait until Established
        and served."""
        docs = [d for path in sorted(CRD_DIR.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
        names = []
        for doc in docs + (extra or []):
            self.request(
                "PATCH",
                self.path("CustomResourceDefinition", name=doc["metadata"]["name"]),
                doc,
                {"fieldManager": FIELD_MANAGER, "force": "true"},
                "application/apply-patch+yaml",
            )
            names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + timeout
        for name in names:
            while not has_condition(
                self.request("GET", self.path("CustomResourceDefinition", name=name)), "Established"
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} not Established after {timeout}s")
                time.sleep(0.2)
            self.wait_crd_served(name, deadline)

    def wait_crd_served(self, name: str, deadline: float) -> None:
        """Established is not yet served: while a new or changed CRD's storage initializes, a
        LIST or WATCH answers 429 "storage is (re)initializing", which an operator started at
        once logs as an error. Wait until each served version's watch cache answers a LIST."""
        crd = self.request("GET", self.path("CustomResourceDefinition", name=name))
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served")):
            while True:
                try:
                    # resourceVersion=0: answered from the watch cache, the part that reinitializes
                    self.request("GET", f"/apis/{group}/{version}/{plural}",
                                 query={"limit": 1, "resourceVersion": "0"})
                    break
                except ApiException as e:
                    if e.status not in (404, 429, 503) or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)


class KubeEnv:
    """What a test gets: the cluster, its own namespace and helpers."""

    def __init__(self, cluster: KubeCluster, namespace: str, workdir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.kubeconfig = cluster.kubeconfig
        self.api = cluster.api
        self._workdir = workdir

    # ------------------------------------------------------------ faults and instant Pods

    @property
    def faults(self) -> Any:
        return self.cluster.faults

    @property
    def counters(self) -> Any:
        return self.cluster.counters

    def require_faults(self) -> None:
        """Skip unless operator requests can be failed and counted (the local control plane)."""
        if self.cluster.faults is None:
            pytest.skip(f"needs fault injection (the local control plane), not --cluster={self.cluster.kind}")

    def run_pods_instantly(self, results: dict[str, str] | None = None) -> None:
        """Pods of this namespace "run" without any process: Job Pods succeed at once with
        ``results[<app.kubernetes.io/component label>]`` as their termination message, serving
        Pods turn Ready: the node agent's instant mode (a namespace label plus a ConfigMap of
        results) on the local control plane."""
        results = dict(results or {})
        if self.cluster.kind != "controlplane":
            pytest.skip("instant Pods need the local node agent")
        from tests.localcluster.nodeagent import INSTANT_LABEL, INSTANT_RESULTS

        self.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": INSTANT_RESULTS}, "data": results})
        self.patch("Namespace", self.namespace, {"metadata": {"labels": {INSTANT_LABEL: "instant"}}})

    # ------------------------------------------------------------ object helpers

    def _ns(
        self, kind: str, obj_ns: str | None, namespace: str | None, api_version: str | None
    ) -> str | None:
        _, _, namespaced = self.cluster.resource(kind, api_version)
        return (namespace or obj_ns or self.namespace) if namespaced else None

    def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        meta = obj.get("metadata") or {}
        kind, av = obj["kind"], obj.get("apiVersion")
        ns = self._ns(kind, meta.get("namespace"), namespace, av)
        return self.cluster.request("POST", self.cluster.path(kind, ns, api_version=av), obj)

    def apply(self, obj: Obj, namespace: str | None = None) -> Obj:
        """Server-side apply (create or update), field manager ``dockyard-tests``, force."""
        meta = obj.get("metadata") or {}
        kind, av = obj["kind"], obj.get("apiVersion")
        ns = self._ns(kind, meta.get("namespace"), namespace, av)
        if ns:
            obj = {**obj, "metadata": {**meta, "namespace": ns}}
        return self.cluster.request(
            "PATCH",
            self.cluster.path(kind, ns, meta["name"], av),
            obj,
            {"fieldManager": FIELD_MANAGER, "force": "true"},
            "application/apply-patch+yaml",
        )

    def apply_file(self, path: str | Path, namespace: str | None = None) -> list[Obj]:
        """Server-side apply every document of a YAML file (or every *.yaml in a directory)."""
        p = Path(path)
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        out = []
        for f in files:
            for doc in yaml.safe_load_all(f.read_text()):
                if doc:
                    out.append(self.apply(doc, namespace))
        return out

    def get(
        self, kind: str, name: str, namespace: str | None = None, api_version: str | None = None
    ) -> Obj | None:
        """The object, or None if it does not exist."""
        ns = self._ns(kind, None, namespace, api_version)
        try:
            return self.cluster.request("GET", self.cluster.path(kind, ns, name, api_version))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        api_version: str | None = None,
    ) -> list[Obj]:
        ns = self._ns(kind, None, namespace, api_version)
        lst = self.cluster.request(
            "GET",
            self.cluster.path(kind, ns, api_version=api_version),
            query={"labelSelector": label_selector},
        )
        return list(lst.get("items") or [])

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        api_version: str | None = None,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> Obj:
        """patch_type: merge | json | strategic."""
        ctype = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[patch_type]
        ns = self._ns(kind, None, namespace, api_version)
        return self.cluster.request(
            "PATCH", self.cluster.path(kind, ns, name, api_version, subresource), patch, content_type=ctype
        )

    def patch_status(
        self, kind: str, name: str, status: Obj, namespace: str | None = None, api_version: str | None = None
    ) -> Obj:
        return self.patch(kind, name, {"status": status}, namespace, api_version, subresource="status")

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        api_version: str | None = None,
        propagation: str = "Background",
        missing_ok: bool = True,
    ) -> Obj | None:
        ns = self._ns(kind, None, namespace, api_version)
        try:
            return self.cluster.request(
                "DELETE",
                self.cluster.path(kind, ns, name, api_version),
                {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation},
            )
        except ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            raise

    # ------------------------------------------------------------ waiting

    @staticmethod
    def wait_for(
        predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = ""
    ) -> T:
        """Poll ``predicate()`` until it returns something truthy; return that. AssertionError
        (with the last value) on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {message or getattr(predicate, '__name__', predicate)}"
                    f"; last value: {last!r}"
                )
            time.sleep(interval)

    @staticmethod
    async def wait_for_async(
        predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = ""
    ) -> T:
        """:meth:`wait_for` for async tests: runs ``predicate`` in a worker thread, so the loop
        (e.g. an in-process operator) keeps running."""
        deadline = time.monotonic() + timeout
        while True:
            last = await asyncio.to_thread(predicate)
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {message}; last value: {last!r}"
                )
            await asyncio.sleep(interval)

    def wait_for_object(
        self,
        kind: str,
        name: str,
        predicate: Callable[[Obj], Any] | None = None,
        namespace: str | None = None,
        timeout: float = 30.0,
        api_version: str | None = None,
    ) -> Obj:
        """Wait until the object exists and ``predicate(obj)`` is truthy; return the object."""
        box: dict[str, Obj | None] = {"obj": None}

        def check() -> bool:
            obj = self.get(kind, name, namespace, api_version)
            box["obj"] = obj
            return obj is not None and (predicate is None or bool(predicate(obj)))

        try:
            self.wait_for(check, timeout, message=f"{kind} {name}")
        except AssertionError as e:
            raise AssertionError(f"{e}; object: {json.dumps(box['obj'], indent=1)[:4000]}") from None
        assert box["obj"] is not None
        return box["obj"]

    def wait_for_deleted(
        self, kind: str, name: str, namespace: str | None = None, timeout: float = 30.0
    ) -> None:
        self.wait_for(lambda: self.get(kind, name, namespace) is None, timeout, message=f"{kind} {name} gone")

    def wait_service_settled(self, name: str, timeout: float = 120.0) -> None:
        """Wait until Service ``name`` sends traffic only to its current Pods: no selected Pod is
        terminating (old Pods fully gone), its EndpointSlices list exactly the Ready Pods, and
        (local control plane) kube-proxy's ruleset load-balances to exactly those Pods. A client of a real cluster
        cannot know this; a test that counts which backend answered must."""
        svc = self.get("Service", name)
        assert svc is not None, f"Service {name}"
        selector = ",".join(f"{k}={v}" for k, v in sorted((svc["spec"].get("selector") or {}).items()))

        def settled() -> bool:
            pods = self.list("Pod", label_selector=selector)
            if not pods or any(p["metadata"].get("deletionTimestamp") for p in pods):
                return False
            ready = {p["status"].get("podIP") for p in pods if has_condition(p, "Ready")}
            if len(ready) != len(pods):
                return False
            slices = self.list("EndpointSlice", label_selector=f"kubernetes.io/service-name={name}")
            endpoints = [e for s in slices for e in s.get("endpoints") or []]
            serving = {a for e in endpoints if (e.get("conditions") or {}).get("ready") for a in e["addresses"]}
            return serving == ready and len(endpoints) == len(ready)

        self.wait_for(settled, timeout, interval=0.2, message=f"Service {name} serving only its current Pods")
        if self.cluster.kind == "controlplane":
            ready = {p["status"]["podIP"] for p in self.list("Pod", label_selector=selector)}
            self.wait_for(lambda: _kube_proxy_endpoints(self.namespace, name) == ready, timeout, interval=0.2,
                          message=f"kube-proxy's rules for Service {name} send to its current Pods")


_NFT_SERVICE_CHAIN = re.compile(r"chain service-\w+-(?P<ns>[^/\s]+)/(?P<name>[^/\s]+)/\S+ \{(?P<body>[^}]*\})")
_NFT_ENDPOINT = re.compile(r"\d+ : (?P<ip>[\d.]+) \. \d+")


def _kube_proxy_endpoints(namespace: str, name: str) -> set[str]:
    """The Pod IPs kube-proxy (nftables mode) load-balances Service ``name`` to, read from its
    ruleset: each service chain is ``dnat ip to numgen random mod N map { i : ip . port }``.
    Endpoints being Ready in the API says nothing about when kube-proxy's informer sees them;
    the ruleset is what the packets meet."""
    table = subprocess.run(["nft", "list", "table", "ip", "kube-proxy"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    return {m["ip"] for c in _NFT_SERVICE_CHAIN.finditer(table)
            if (c["ns"], c["name"]) == (namespace, name) for m in _NFT_ENDPOINT.finditer(c["body"])}


# --------------------------------------------------------------------------------------------


def _start_controlplane(tmp: Path) -> KubeCluster:
    from tests.localcluster import controlplane

    state = controlplane.running_cluster()
    on_close = None
    if state is None:
        cp = controlplane.ControlPlane()
        controlplane.stop_recorded(cp.state_dir)  # leftovers of a crashed session
        state = cp.start()
        on_close = cp.stop
    cluster = KubeCluster(Path(state.kubeconfig), kind="controlplane", local=state, on_close=on_close, workdir=tmp)
    from tests.localcluster.faultproxy import FaultProxy

    cluster.proxy = FaultProxy(state.server, Path(state.kubeconfig).parent / "pki" / "ca.crt").start()
    os.environ["PATH"] = f"{state.bin_dir}{os.pathsep}{os.environ['PATH']}"  # kubectl of the same release
    return cluster


def cluster_kind(config: pytest.Config) -> str:
    kind = config.getoption("--cluster") or os.environ.get(ENV_CLUSTER)
    if kind:
        return str(kind)
    return "kubeconfig" if os.environ.get(ENV_KUBECONFIG) else "controlplane"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=CLUSTER_KINDS,
        default=None,
        help=f"where integration tests run: the real control plane (default), the cluster of "
             f"{ENV_KUBECONFIG}; env {ENV_CLUSTER} does the same",
    )


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[KubeCluster]:
    kind = cluster_kind(pytestconfig)
    tmp = tmp_path_factory.mktemp("kube")
    if kind == "kubeconfig":
        real = os.environ.get(ENV_KUBECONFIG)
        if not real:
            raise pytest.UsageError(f"--cluster=kubeconfig needs {ENV_KUBECONFIG}")
        cluster = KubeCluster(Path(real), kind="kubeconfig", workdir=tmp)
        cluster.apply_crds()
    else:
        from tests.kubeapi.server import FOREIGN_CRDS
        from tests.localcluster import build

        cluster = _start_controlplane(tmp)
        # The routers' target kinds: the real HTTPRoute and VirtualService CRDs from their
        # projects' modules; SeldonDeployment's is not published there, so a permissive stand-in.
        seldon = [c for c in FOREIGN_CRDS if c["spec"]["group"] == "machinelearning.seldon.io"]
        cluster.apply_crds(extra=build.foreign_crds() + seldon)
    try:
        yield cluster
    finally:
        cluster.close()


def _namespace_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.split("::")[-1].lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def kube(kube_cluster: KubeCluster, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeEnv]:
    with scratch_namespace(kube_cluster, request.node.nodeid, tmp_path) as env:
        yield env


@contextlib.contextmanager
def scratch_namespace(cluster: KubeCluster, hint: str, workdir: Path) -> Iterator[KubeEnv]:
    """A fresh namespace (Pod Security ``restricted`` on a real cluster), deleted afterwards;
    module-scoped fixtures use it directly."""
    name = _namespace_name(hint)
    labels = POD_SECURITY_LABELS
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    env = KubeEnv(cluster, name, workdir)
    try:
        yield env
    finally:
        try:
            cluster.request("DELETE", f"/api/v1/namespaces/{name}")
        except ApiException:
            pass


@pytest.fixture
def ns(kube: KubeEnv) -> str:
    return kube.namespace
