"""Shared set-up for the operator benchmarks (not a benchmark itself).

A "stack" is what one measurement needs: a Kubernetes API with something that "runs" Jobs
and Deployments instantly, one namespace, and the real operator (`dockyard operator
--standalone`, its own process) pointed at a real MLflow server through the counting proxy (a
thread of this process). Two targets provide the API (`--target`):

* ``controlplane`` (default): the real local control plane (tests/localcluster: etcd,
  kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, CoreDNS, the node
  agent), reused if one is running, else started for the run and stopped after it. The bench
  namespace is labelled for the node agent's instant mode (Job Pods succeed at once with the
  results of the namespace's ConfigMap ``dockyard-node-agent-instant``; serving Pods turn
  Ready). The operator runs as the Helm chart's ServiceAccount (release ``dockyard-bench`` in
  namespace ``dockyard-bench``, the chart's own RBAC) through a FaultProxy that counts its
  requests; the benchmark's own client talks plain HTTP to a second FaultProxy that presents
  the admin client certificate. So the counters hold the operator's requests only.
* ``emulator``: the in-repo Kubernetes API emulator and its instant kubelet
  (``tests/kubeapi/instant.py``; both threads of this process); the counters hold every client's requests, and the
  executor's and the benchmark's own are subtracted.

What shares this process (and its GIL) is accounted per *thread*
(`/proc/self/task/<tid>/stat`); the operator, MLflow and, on the control plane, each cluster
component per process, so a figure can be split into "our operator's cost" and "the test
rig's cost".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from tests.kubeapi.instant import InstantKubelet  # noqa: E402
from tests.kubeapi.server import EmulatorThread  # noqa: E402
from tests.mlflowproxy import MlflowProxy  # noqa: E402
from tests.plugins.mlflow_server import MlflowServer  # noqa: E402
from tests.plugins.operator import OperatorProcess  # noqa: E402

GROUP = "dockyard.dev/v1alpha1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Requests the emulator target's instant kubelet makes (it plays kubelet and the Job/Deployment controllers);
# everything else that is not a watch comes from the operator (or from the benchmark's own
# creates, which the scripts subtract).
EXECUTOR_REQUESTS = {("create", "pods"), ("patch", "pods/status"), ("patch", "jobs/status"),
                     ("patch", "deployments/status")}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
TARGETS = ("controlplane", "emulator")
TARGET_DESCRIPTIONS = {
    "controlplane": "the local Kubernetes control plane (real kube-apiserver, etcd, controllers, scheduler; "
                    "node agent in instant mode)",
    "emulator": "the in-process Kubernetes API emulator with its instant kubelet (Jobs and Deployments done at once)",
}


def add_target_argument(p: Any) -> None:
    p.add_argument("--target", choices=TARGETS, default="controlplane",
                   help="Kubernetes API to run against: the local control plane (reused if running, else "
                        "started and stopped) or the in-process API emulator (default: %(default)s)")


# -- printing -------------------------------------------------------------------------------

def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def code_version() -> str:
    """HEAD plus a digest of uncommitted changes under operator/ (what the operator process will import)."""
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    diff = git("diff", "HEAD", "--", "operator")
    return f"{head}+dirty:{hashlib.sha256(diff.encode()).hexdigest()[:10]}" if diff else head


def print_header(script: str, params: dict[str, Any]) -> None:
    print(f"== {script}  {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print("parameters: " + " ".join(f"{k}={v}" for k, v in params.items()))
    if "target" in params:
        print(f"target: {params['target']} = {TARGET_DESCRIPTIONS.get(params['target'], '?')}")
    print(f"machine: os.cpu_count()={os.cpu_count()} loadavg(1/5/15m)={loadavg()} "
          f"python={platform.python_version()} {platform.machine()}")
    print(f"operator code: {code_version()}")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def dist_line(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{label:<28} n={len(ms):<5} p50={percentile(ms, 50):8.1f} ms  p95={percentile(ms, 95):8.1f} ms  "
            f"p99={percentile(ms, 99):8.1f} ms  max={max(ms, default=math.nan):8.1f} ms")


def fmt_counts(counts: dict[tuple[str, str], int] | dict[str, int]) -> str:
    if not counts:
        return "(none)"
    items = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return ", ".join(f"{'/'.join(k) if isinstance(k, tuple) else k}={v}" for k, v in items)


# -- CPU and memory from /proc ----------------------------------------------------------------

def _stat_fields(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after "pid (comm)", starting at state


def proc_cpu(pid: int) -> float:
    """utime+stime of one process (all its threads), seconds."""
    f = _stat_fields(f"/proc/{pid}/stat")
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def group_cpu(pgid: int) -> float:
    """utime+stime summed over the live processes of a process group (e.g. MLflow + its workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(f"/proc/{entry}/stat")
        if f and int(f[2]) == pgid:
            total += (int(f[11]) + int(f[12])) / CLK_TCK
    return total


def thread_cpu(native_id: int | None) -> float:
    if native_id is None:
        return 0.0
    f = _stat_fields(f"/proc/self/task/{native_id}/stat")
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB (MiB) from /proc/<pid>/status."""
    rss = hwm = math.nan
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, hwm


def _thread_id(name: str) -> int | None:
    for t in threading.enumerate():
        if t.name == name:
            return t.native_id
    return None


# -- MLflow ---------------------------------------------------------------------------------

class TimingProxy(MlflowProxy):
    """The counting proxy, also timing each call (proxy in -> upstream answer out)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.durations: list[tuple[float, str, float]] = []  # (monotonic end, endpoint, seconds)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.monotonic()
        resp = await super()._handle(request)
        t1 = time.monotonic()
        self.durations.append((t1, f"{request.method} {request.path.removeprefix('/api/2.0/mlflow/')}", t1 - t0))
        return resp

    def latency_since(self, t0: float) -> list[float]:
        return [d for end, _, d in list(self.durations) if end >= t0]

    def p50_by_endpoint(self, t0: float) -> str:
        by: dict[str, list[float]] = {}
        for end, endpoint, d in list(self.durations):
            if end >= t0:
                by.setdefault(endpoint, []).append(d)
        return ", ".join(f"{k} {1000 * percentile(v, 50):.0f}" for k, v in sorted(by.items()))


@dataclass
class Mlflow:
    server: MlflowServer
    proxy: TimingProxy
    root: Path

    @classmethod
    def start(cls, root: Path, workers: int) -> Mlflow:
        (root / "mlflow").mkdir(parents=True, exist_ok=True)
        server = MlflowServer(root / "mlflow", workers=workers)
        t0 = time.monotonic()
        server.start()
        proxy = TimingProxy(server.uri).start()
        print(f"mlflow: server up in {time.monotonic() - t0:.1f}s (workers={workers}); proxy {proxy.uri}")
        return cls(server, proxy, root)

    def cpu(self) -> float:
        return group_cpu(self.server.proc.pid) if self.server.proc else 0.0

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proxy.stop()
        with contextlib.suppress(Exception):
            self.server.stop()


# -- the stack --------------------------------------------------------------------------------

def instant_result(job: dict[str, Any]) -> tuple[int, str]:
    component = ((job.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
    if component == "profiler":
        name = job["metadata"]["name"]
        version = "sha256:" + hashlib.sha256(name.rsplit("-profile", 1)[0].encode()).hexdigest()
        return 0, profile_result(version)
    return 0, json.dumps({"ok": True, "metrics": {}})


def profile_result(version: str) -> str:
    return json.dumps({"ok": True, "version": version, "rows": 150, "columns": 5, "profile": {},
                       "profileTruncated": False, "reason": None, "errors": []})


# The node agent's instant mode reads one ConfigMap per namespace, keyed by the Pod's
# app.kubernetes.io/component label: every Dataset of a bench namespace gets the same version.
INSTANT_RESULTS = {
    "profiler": profile_result("sha256:" + hashlib.sha256(b"dockyard-bench iris").hexdigest()),
    "trainer": json.dumps({"ok": True, "metrics": {}}),
}
IRIS_DATA = {"iris.csv": "sepal_length,sepal_width,petal_length,petal_width,species\n"}


@dataclass
class CpuSample:
    wall: float
    operator: float
    mlflow: float
    threads: dict[str, float]  # threads of this process, by name
    procs: dict[str, float] = field(default_factory=dict)  # cluster component -> process CPU (controlplane)


# -- the controlplane target ----------------------------------------------------------------

BENCH_RELEASE = "dockyard-bench"  # the chart rendered as this release in this namespace ...
BENCH_IDENTITY_NAMESPACE = "dockyard-bench"  # ... so it never collides with "dockyard-tests"
FIELD_MANAGER = "dockyard-bench"
# What the chart's operator Deployment sets with default values: only the builtin router, which
# is all its default RBAC covers (the operator's own default enables every router, and its prune
# would list HTTPRoutes and VirtualServices it may not read).
CHART_OPERATOR_ENV = {"DOCKYARD_ENABLED_ROUTERS": "builtin"}
# Cluster processes whose CPU the reports show, with the names ClusterState.pids uses.
CLUSTER_PROCS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "node-agent")
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
_RBAC_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
}
_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class LocalCluster:
    """The controlplane target's shared pieces, set up once per benchmark run: the local cluster
    (the running one, else one started here), the operator identity, and two FaultProxies: one
    the operator talks through (its requests counted) and one for the benchmark's own client
    (plain HTTP, admin client certificate)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state: Any = None  # tests.localcluster.controlplane.ClusterState
        self.started: Any = None  # the ControlPlane we started (stopped in close()), else None
        self.operator_proxy: Any = None
        self.bench_proxy: Any = None
        self.operator_kubeconfig = root / "operator.kubeconfig"
        self.version = "?"

    @classmethod
    def open(cls, root: Path) -> LocalCluster:
        self = cls(root)
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        from tests.localcluster import controlplane
        from tests.localcluster.faultproxy import FaultProxy

        self.root.mkdir(parents=True, exist_ok=True)
        self.state = controlplane.running_cluster()
        if self.state is None:
            cp = controlplane.ControlPlane()
            controlplane.stop_recorded(cp.state_dir)  # leftovers of a crashed run (what the tests do too)
            t0 = time.monotonic()
            self.started = cp
            self.state = cp.start()
            print(f"controlplane: no local cluster was running; started one in {time.monotonic() - t0:.1f}s "
                  f"(stopped at the end)")
        else:
            age = time.time() - self.state.started_at if self.state.started_at else math.nan
            print(f"controlplane: reusing the running local cluster (up {age / 60:.0f} min; left running)")
        ca, cert, key = self._admin_credentials()
        self.bench_proxy = FaultProxy(self.state.server, ca, client_cert=(cert, key),
                                      thread_name="fault-proxy-bench").start()
        self.operator_proxy = FaultProxy(self.state.server, ca, thread_name="fault-proxy-operator").start()
        asyncio.run(self._bootstrap())
        print(f"controlplane: {self.state.server} (kube-apiserver {self.version}); operator identity "
              f"system:serviceaccount:{BENCH_IDENTITY_NAMESPACE}:{BENCH_RELEASE}-operator (chart RBAC) via "
              f"counting proxy {self.operator_proxy.url}; benchmark client via {self.bench_proxy.url} (admin cert)")
        sys.stdout.flush()

    @property
    def url(self) -> str:
        return str(self.bench_proxy.url)

    def _admin_credentials(self) -> tuple[Path, Path, Path]:
        """CA, client certificate and key out of the admin kubeconfig's *-data fields."""
        cfg = yaml.safe_load(Path(self.state.kubeconfig).read_text())
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
        out = []
        for name, data in (("ca.crt", cluster["certificate-authority-data"]),
                           ("admin.crt", user["client-certificate-data"]),
                           ("admin.key", user["client-key-data"])):
            path = self.root / name
            path.touch(mode=0o600)
            path.write_bytes(base64.b64decode(data))
            out.append(path)
        return out[0], out[1], out[2]

    async def _bootstrap(self) -> None:
        async with aiohttp.ClientSession() as s:
            self.version = str((await kube_request(s, "GET", f"{self.url}/version")).get("gitVersion", "?"))
            await self._ensure_crds(s)
            await self._make_operator_identity(s)

    async def _ensure_crds(self, s: aiohttp.ClientSession) -> None:
        """Apply the CRDs of crds/ that the cluster lacks; leave present ones alone (a test suite
        may share the cluster) but say so if they differ from this tree's."""
        applied, differ = [], []
        for path in sorted((REPO / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                name = doc["metadata"]["name"]
                url = f"{self.url}{_CRD_PATH}/{name}"
                current = await kube_request(s, "GET", url, allow=(404,))
                if current:
                    dry = await kube_request(s, "PATCH", url, doc, content_type="application/apply-patch+yaml",
                                             params={"fieldManager": FIELD_MANAGER, "force": "true",
                                                     "dryRun": "All"})
                    if dry.get("spec") != current.get("spec"):
                        differ.append(name)
                    continue
                await kube_request(s, "PATCH", url, doc, content_type="application/apply-patch+yaml",
                                   params={"fieldManager": FIELD_MANAGER, "force": "true"})
                applied.append(name)
        deadline = time.monotonic() + 60
        for name in applied:
            while not _established(await kube_request(s, "GET", f"{self.url}{_CRD_PATH}/{name}")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established after 60s")
                await asyncio.sleep(0.2)
        if applied:
            print(f"controlplane: applied CRDs {', '.join(applied)}")
        if differ:
            print(f"WARNING: CRDs on the cluster differ from crds/ and were left as they are: {', '.join(differ)}")

    def make_identity(self, kubeconfig: Path, *, release: str, values: dict[str, Any]) -> Path:
        """Another operator identity, for a benchmark that needs chart values other than the
        defaults (e.g. more routers): the chart's RBAC rendered with `values` as `release`."""
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                await self._make_operator_identity(s, release=release, values=values, kubeconfig=kubeconfig)

        asyncio.run(run())
        return kubeconfig

    async def _make_operator_identity(self, s: aiohttp.ClientSession, *, release: str = BENCH_RELEASE,
                                      values: dict[str, Any] | None = None, kubeconfig: Path | None = None) -> None:
        """The chart's ServiceAccount and RBAC (release dockyard-bench by default), server-side applied, and a
        kubeconfig with a TokenRequest token of that ServiceAccount pointing at the counting proxy
        (as tests/plugins/kube.py does for the tests' identity)."""
        from tests.chart import chartlib

        objects = chartlib.render({"leaderElection": {"enabled": False}, **(values or {})},
                                  namespace=BENCH_IDENTITY_NAMESPACE, release=release)
        rbac = [o for o in objects if o["kind"] in _RBAC_PATHS]
        sa = next(o for o in rbac if o["kind"] == "ServiceAccount")
        await kube_request(s, "POST", f"{self.url}/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BENCH_IDENTITY_NAMESPACE}},
                           allow=(409,))
        for obj in rbac:
            path = _RBAC_PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace") or BENCH_IDENTITY_NAMESPACE,
                                                   name=obj["metadata"]["name"])
            await kube_request(s, "PATCH", f"{self.url}{path}", obj, content_type="application/apply-patch+yaml",
                               params={"fieldManager": FIELD_MANAGER, "force": "true"})
        token = (await kube_request(
            s, "POST",
            f"{self.url}/api/v1/namespaces/{BENCH_IDENTITY_NAMESPACE}/serviceaccounts/{sa['metadata']['name']}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 24 * 3600}}))["status"]["token"]
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [{"name": "proxy", "cluster": {"server": self.operator_proxy.url}}],
            "users": [{"name": "dockyard-operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "proxy", "user": "dockyard-operator"}}],
        }
        path = kubeconfig or self.operator_kubeconfig
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(cfg))

    def procs_cpu(self) -> dict[str, float]:
        pids = self.state.pids if self.state is not None else {}
        return {name: proc_cpu(pids[name]) for name in CLUSTER_PROCS if name in pids}

    def close(self) -> None:
        for proxy in (self.operator_proxy, self.bench_proxy):
            if proxy is not None:
                with contextlib.suppress(Exception):
                    proxy.stop()
        if self.started is not None:
            print("controlplane: stopping the local cluster this run started")
            self.started.stop()
            self.started = None


def _established(crd: dict[str, Any]) -> bool:
    conds = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


@contextlib.contextmanager
def bench_target(target: str, root: Path) -> Iterator[LocalCluster | None]:
    """The target's shared pieces for a whole benchmark run: a LocalCluster, or None (emulator)."""
    if target == "emulator":
        yield None
        return
    if target != "controlplane":
        raise ValueError(f"unknown target {target!r}")
    cluster = LocalCluster.open(root / "controlplane")
    try:
        yield cluster
    finally:
        cluster.close()


def run_one_stack(args: Any, prefix: str, namespace: str,
                  measure: Callable[[Stack, Any], Any]) -> int:
    """The common main of a one-stack benchmark: target, MLflow, one Stack, `measure` under
    asyncio, then everything stopped and the work dir removed (unless --keep)."""
    root = workdir(prefix)
    try:
        with bench_target(args.target, root) as cluster:
            mlflow = Mlflow.start(root, args.mlflow_workers)
            stack = Stack(root / "stack", namespace, mlflow, workers=args.workers, cluster=cluster, keep=args.keep)
            try:
                stack.start()
                return int(asyncio.run(measure(stack, args)))
            finally:
                stack.stop()
                mlflow.stop()
    finally:
        cleanup(root, args.keep)


class Stack:
    """One namespace with instant Jobs and the operator watching it, on either target: the
    emulator + instant executor (cluster None) or the local control plane (a LocalCluster)."""

    EMULATOR_THREADS = ("kubeapi-emulator", "local-executor", "mlflow-proxy", "MainThread")
    CONTROLPLANE_THREADS = ("fault-proxy-operator", "fault-proxy-bench", "mlflow-proxy", "MainThread")

    def __init__(self, root: Path, namespace: str, mlflow: Mlflow, *, workers: int,
                 history_limit: int = 1_000_000, cluster: LocalCluster | None = None, keep: bool = False) -> None:
        self.root = root
        self.mlflow = mlflow
        self.workers = workers
        self.cluster = cluster
        self.keep = keep
        self.target = "emulator" if cluster is None else "controlplane"
        self.emu: EmulatorThread | None = None
        if cluster is None:
            self.namespace = namespace
            self.emu = EmulatorThread(crd_dirs=[REPO / "crds"], foreign_crds=True, history_limit=history_limit)
            self.threads = self.EMULATOR_THREADS
        else:
            # A fresh name each run: a namespace of an earlier run may still be terminating.
            self.namespace = f"{namespace}-{os.urandom(3).hex()}"
            self.threads = self.CONTROLPLANE_THREADS
        self.url = ""
        self.kubeconfig = root / "kubeconfig"
        self.executor: InstantKubelet | None = None
        self.operator: OperatorProcess | None = None
        self._ns_created = False

    @property
    def api_name(self) -> str:
        return api_name(self.target)

    def start(self, *, operator: bool = True) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.emu is not None:
            self.url = self.emu.start()
            self.emu.write_kubeconfig(self.kubeconfig)
            asyncio.run(self._bootstrap())
            self.executor = InstantKubelet(self.url, self.namespace, instant_result).start()
        else:
            assert self.cluster is not None
            self.url = self.cluster.url
            self.kubeconfig = self.cluster.operator_kubeconfig
            asyncio.run(self._bootstrap())
        if operator:
            self.start_operator()
        return self

    async def _bootstrap(self) -> None:
        async with aiohttp.ClientSession() as s:
            base = f"{self.url}/api/v1/namespaces"
            if self.emu is not None:
                await post(s, base, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
            else:
                from tests.localcluster import nodeagent

                labels = {nodeagent.INSTANT_LABEL: "instant", **POD_SECURITY_LABELS}
                await post(s, base, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": self.namespace, "labels": labels}})
                self._ns_created = True
                await post(s, f"{base}/{self.namespace}/configmaps",
                           {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": nodeagent.INSTANT_RESULTS, "namespace": self.namespace},
                            "data": INSTANT_RESULTS})
                # Pods are refused until the serviceaccount controller made "default".
                deadline = time.monotonic() + 60
                while not await kube_request(s, "GET", f"{base}/{self.namespace}/serviceaccounts/default",
                                             allow=(404,)):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no default ServiceAccount in {self.namespace} after 60s")
                    await asyncio.sleep(0.1)
            await post(s, f"{base}/{self.namespace}/configmaps",
                       {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "iris-data", "namespace": self.namespace}, "data": IRIS_DATA})

    def start_operator(self) -> OperatorProcess:
        if self.operator is None:
            self.operator = OperatorProcess(
                self.kubeconfig, self.mlflow.proxy.uri, self.root / "operator", namespaces=[self.namespace],
                extra_env={"DOCKYARD_WORKERS": str(self.workers), **CHART_OPERATOR_ENV},
                mlflow_uri_for_pods=self.mlflow.server.uri)
        self.operator.start()
        return self.operator

    @property
    def operator_pid(self) -> int:
        assert self.operator is not None and self.operator.proc is not None
        return self.operator.proc.pid

    def cpu(self) -> CpuSample:
        op = proc_cpu(self.operator_pid) if self.operator and self.operator.alive() else 0.0
        return CpuSample(time.monotonic(), op, self.mlflow.cpu(),
                         {n: thread_cpu(_thread_id(n)) for n in self.threads},
                         self.cluster.procs_cpu() if self.cluster is not None else {})

    def stop(self) -> None:
        if self.operator is not None:
            with contextlib.suppress(Exception):
                self.operator.stop()
        if self.executor is not None:
            with contextlib.suppress(Exception):
                self.executor.stop()
        if self.emu is not None:
            with contextlib.suppress(Exception):
                self.emu.stop()
        if self.cluster is not None and self._ns_created:
            if self.keep:
                print(f"namespace kept: {self.namespace}")
            else:
                try:
                    took = asyncio.run(self._delete_namespace())
                    print(f"cleanup: namespace {self.namespace} deleted in {took:.1f}s")
                except Exception as e:
                    print(f"cleanup: namespace {self.namespace} not deleted: {e}")

    async def _delete_namespace(self, timeout: float = 300) -> float:
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as s:
            url = f"{self.url}/api/v1/namespaces/{self.namespace}"
            await kube_request(s, "DELETE", url, allow=(404,))
            while await kube_request(s, "GET", url, allow=(404,)):
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"still terminating after {timeout:.0f}s")
                await asyncio.sleep(0.5)
        return time.monotonic() - t0

    # -- request accounting ------------------------------------------------------------
    def counts(self) -> dict[tuple[str, str], int]:
        """Requests by (verb, resource): every client's on the emulator, the operator's only on
        the control plane (its counting proxy)."""
        if self.emu is not None:
            return self.emu.counters.snapshot()
        assert self.cluster is not None
        return dict(self.cluster.operator_proxy.counters.snapshot())

    def delta(self, before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        now = self.counts()
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}


def api_name(target: str) -> str:
    return "emulator" if target == "emulator" else "apiserver"


def split_requests(delta: dict[tuple[str, str], int], bench_own: Counter[tuple[str, str]] | None = None,
                   *, target: str = "emulator"
                   ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(operator requests, executor requests, watches) from a counter delta.

    On the emulator the counters hold every client's requests: `bench_own` (the benchmark's own)
    is subtracted and the executor's are split off. On the control plane they hold the
    operator's only (its proxy): nothing is subtracted and the executor part is empty."""
    own = (bench_own or Counter()) if target == "emulator" else Counter()
    op: dict[tuple[str, str], int] = {}
    ex: dict[tuple[str, str], int] = {}
    watches: dict[tuple[str, str], int] = {}
    for (verb, res), n in delta.items():
        n -= own.get((verb, res), 0)
        if n <= 0:
            continue
        if verb == "watch":
            watches[(verb, res)] = n
        elif target == "emulator" and (verb, res) in EXECUTOR_REQUESTS:
            ex[(verb, res)] = n
        else:
            op[(verb, res)] = n
    return op, ex, watches


def executor_line(target: str, ex: dict[tuple[str, str], int], label: str) -> str:
    if target == "emulator":
        return f"{label}: {fmt_counts(ex)}"
    return (f"{label}: not counted on the controlplane target (kube-controller-manager, kube-scheduler and "
            f"the node agent do that work and talk to the apiserver directly; only the operator's requests "
            f"go through the counting proxy)")


def cpu_report(a: CpuSample, b: CpuSample, requests: int, mlflow_calls: int) -> list[str]:
    wall = b.wall - a.wall
    op = b.operator - a.operator
    ml = b.mlflow - a.mlflow
    th = {k: b.threads[k] - a.threads.get(k, 0.0) for k in b.threads}

    def row(label: str, sec: float, extra: str = "") -> str:
        return f"  {label:<26}{sec:7.2f} s  {100 * sec / wall:5.0f}%{extra}"

    lines = [
        f"cpu over {wall:.1f}s wall (seconds of CPU, % of one core):",
        row("operator process", op),
        row("mlflow server (+workers)", ml,
            f"   {1000 * ml / mlflow_calls:.1f} ms/call over {mlflow_calls} calls" if mlflow_calls else ""),
    ]
    if "kubeapi-emulator" in b.threads:
        emu = th.get("kubeapi-emulator", 0.0)
        lines += [
            row("emulator thread", emu,
                f"   {1000 * emu / requests:.2f} ms/request over {requests} requests (ceiling ~{requests / emu:.0f} "
                f"req/s)" if requests and emu else ""),
            row("executor thread", th.get("local-executor", 0.0)),
        ]
    for name in b.procs:
        lines.append(row(name, b.procs[name] - a.procs.get(name, 0.0)))
    if b.procs:
        total = sum(b.procs[n] - a.procs.get(n, 0.0) for n in b.procs)
        lines.append(row("cluster processes, sum", total,
                         f"   (whole processes: every client of the shared cluster counts, not only this "
                         f"benchmark; the operator made {requests} of the API requests)"))
    if "fault-proxy-operator" in b.threads:
        lines += [row("operator API proxy thread", th.get("fault-proxy-operator", 0.0)),
                  row("benchmark API proxy thread", th.get("fault-proxy-bench", 0.0))]
    lines += [
        row("mlflow proxy thread", th.get("mlflow-proxy", 0.0)),
        row("benchmark client thread", th.get("MainThread", 0.0)),
    ]
    return lines


# -- HTTP helpers -----------------------------------------------------------------------------

async def kube_request(session: aiohttp.ClientSession, method: str, url: str, body: Any = None, *,
                       params: dict[str, str] | None = None, content_type: str = "application/json",
                       allow: tuple[int, ...] = ()) -> dict[str, Any]:
    """One API request; the JSON answer ({} for a status in `allow`); RuntimeError on another error."""
    data = json.dumps(body) if body is not None else None
    async with session.request(method, url, data=data, params=params,
                               headers={"Content-Type": content_type} if data is not None else {}) as resp:
        out = await resp.json(content_type=None)
        if resp.status in allow:
            return {}
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url} -> {resp.status}: {str(out)[:300]}")
        return dict(out or {})


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise RuntimeError(f"POST {url} -> {resp.status}: {str(data)[:300]}")
        return dict(data)


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise RuntimeError(f"GET {url} -> {resp.status}: {str(data)[:300]}")
        return dict(data)


def collection(base: str, ns: str, plural: str) -> str:
    if plural in ("jobs",):
        return f"{base}/apis/batch/v1/namespaces/{ns}/{plural}"
    if plural in ("deployments",):
        return f"{base}/apis/apps/v1/namespaces/{ns}/{plural}"
    if plural in ("pods", "configmaps", "services", "events"):
        return f"{base}/api/v1/namespaces/{ns}/{plural}"
    return f"{base}/apis/{GROUP}/namespaces/{ns}/{plural}"


async def create_all(session: aiohttp.ClientSession, base: str, ns: str, plural: str,
                     bodies: Iterable[dict[str, Any]], concurrency: int) -> dict[str, tuple[float, float]]:
    """POST every body (at most `concurrency` in flight); name -> (monotonic sent, monotonic acknowledged)."""
    sem = asyncio.Semaphore(concurrency)
    url = collection(base, ns, plural)
    times: dict[str, tuple[float, float]] = {}

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            sent = time.monotonic()
            await post(session, url, body)
            times[body["metadata"]["name"]] = (sent, time.monotonic())

    await asyncio.gather(*(one(b) for b in bodies))
    return times


# -- resources ----------------------------------------------------------------------------

def dataset(name: str) -> dict[str, Any]:
    """manifests/examples/01-dataset.yaml without refreshInterval (a refresh is a Job + a write by design)."""
    return {
        "apiVersion": GROUP, "kind": "Dataset", "metadata": {"name": name},
        "spec": {
            "source": {"uri": "file:///data/iris.csv", "format": "csv",
                       "volume": {"configMap": {"name": "iris-data"}, "mountPath": "/data"}},
            "schema": {"target": "species", "columns": [
                {"name": "sepal_length", "type": "float", "nullable": False},
                {"name": "sepal_width", "type": "float", "nullable": False},
                {"name": "petal_length", "type": "float", "nullable": False},
                {"name": "petal_width", "type": "float", "nullable": False},
                {"name": "species", "type": "string", "nullable": False,
                 "allowedValues": ["setosa", "versicolor", "virginica"]}]},
            "validation": {"minRows": 100, "maxMissingFraction": 0.0},
        },
    }


def trainingrun(name: str, dataset_name: str, model: str) -> dict[str, Any]:
    """manifests/examples/02-trainingrun.yaml without qualityGate and alias (instant Jobs log no metrics)."""
    return {
        "apiVersion": GROUP, "kind": "TrainingRun", "metadata": {"name": name},
        "spec": {
            "datasetRef": {"name": dataset_name},
            "modelName": model,
            "trainer": {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                                      "hyperparameters": {"n_estimators": 50, "max_depth": 4, "random_state": 0}}},
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "backoffLimit": 1,
            "activeDeadlineSeconds": 900,
            "retrain": {"onDatasetChange": True},
        },
    }


def modeldeployment(name: str, model: str, versions: tuple[str, str] = ("1", "2")) -> dict[str, Any]:
    """manifests/examples/03-modeldeployment.yaml with pinned versions (no alias refresh by design)."""
    return {
        "apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "modelName": model, "runtime": "mlserver",
            "variants": [
                {"name": "champion", "version": versions[0], "weight": 80, "replicas": 1},
                {"name": "challenger", "version": versions[1], "weight": 20, "replicas": 1},
            ],
            "router": {"type": "builtin", "sticky": {"header": "X-User-Id"}},
        },
    }


# -- observing ------------------------------------------------------------------------------

@dataclass
class Observer:
    """Watches one namespace and stamps `time.monotonic()` on what it sees first:
    per TrainingRun each phase, per trainer Job its appearance (keyed by the owning TrainingRun)."""

    base: str
    ns: str
    phases: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # plural -> name -> phase -> t
    jobs: dict[str, float] = field(default_factory=dict)  # owner TR name -> t
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, session: aiohttp.ClientSession, plurals: Iterable[str]) -> None:
        for plural in plurals:
            rv = await self._list(session, plural)
            self._tasks.append(asyncio.create_task(self._watch(session, plural, rv)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _list(self, session: aiohttp.ClientSession, plural: str) -> str:
        data = await get_json(session, collection(self.base, self.ns, plural))
        now = time.monotonic()
        for item in data.get("items") or []:
            self._see(plural, item, now)
        return str(data["metadata"]["resourceVersion"])

    def _see(self, plural: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        if plural == "jobs":
            if (meta.get("labels") or {}).get("app.kubernetes.io/component") != "trainer":
                return
            owner = next((r["name"] for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
            if owner and owner not in self.jobs:
                self.jobs[owner] = now
                self.changed.set()
            return
        phase = (obj.get("status") or {}).get("phase")
        if phase:
            seen = self.phases.setdefault(plural, {}).setdefault(meta.get("name", ""), {})
            if phase not in seen:
                seen[phase] = now
                self.changed.set()

    async def _watch(self, session: aiohttp.ClientSession, plural: str, rv: str) -> None:
        url = collection(self.base, self.ns, plural)
        while True:
            params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"}
            try:
                async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        now = time.monotonic()
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":  # 410 Gone: relist
                            rv = await self._list(session, plural)
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if ev.get("type") in ("ADDED", "MODIFIED"):
                            self._see(plural, obj, now)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.1)

    def first(self, plural: str, phases: Iterable[str]) -> dict[str, float]:
        """name -> earliest time any of `phases` was seen."""
        wanted = tuple(phases)
        out = {}
        for name, seen in self.phases.get(plural, {}).items():
            ts = [seen[p] for p in wanted if p in seen]
            if ts:
                out[name] = min(ts)
        return out

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 1.0))
        return True


def session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), read_bufsize=1 << 22)


async def wait_quiet(stack: Stack, quiet: float, timeout: float, *, mlflow: Mlflow | None = None,
                     since: float | None = None) -> tuple[bool, float]:
    """Wait until no API request (and no MLflow call) has been counted for `quiet` seconds.

    Returns (quiet reached, monotonic time of the last request seen)."""
    last = since if since is not None else time.monotonic()
    snap = (stack.counts(), mlflow.proxy.snapshot() if mlflow else Counter())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = (stack.counts(), mlflow.proxy.snapshot() if mlflow else Counter())
        if now != snap:
            snap, last = now, time.monotonic()
        elif time.monotonic() - last >= quiet:
            return True, last
    return False, last


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def cleanup(path: Path, keep: bool) -> None:
    if keep:
        print(f"work dir kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


# -- one batch of TrainingRuns ---------------------------------------------------------------

@dataclass
class Batch:
    n: int
    t0: float  # first create sent
    created: dict[str, tuple[float, float]]
    observer: Observer
    t_all_jobs: float
    t_all_done: float
    cpu_start: CpuSample
    cpu_jobs: CpuSample
    cpu_done: CpuSample
    counts_jobs: dict[tuple[str, str], int]
    counts_done: dict[tuple[str, str], int]
    mlflow_jobs: dict[str, int]
    mlflow_done: dict[str, int]
    peak_rss_mb: float
    complete: bool
    api_probe: list[float]  # latency of a GET of one small object, sampled every 50 ms meanwhile
    mlflow_latency: list[float]  # every MLflow call's latency, as the proxy saw it
    reconciles: tuple[float, float]  # TrainingRun reconciles (count, seconds) in the operator
    target: str = "emulator"

    @property
    def bench_own(self) -> Counter[tuple[str, str]]:
        """Requests this benchmark made itself (creates and the probe), to subtract from the counters
        (emulator); none on the control plane, whose counters see the operator's requests only."""
        if self.target != "emulator":
            return Counter()
        return Counter({("create", "trainingruns"): self.n, ("get", "configmaps"): len(self.api_probe) + 1})

    @property
    def t_done_s(self) -> float:
        return self.t_all_done - self.t0

    @property
    def t_jobs_s(self) -> float:
        return self.t_all_jobs - self.t0


async def ensure_datasets(stack: Stack, sess: aiohttp.ClientSession, names: list[str], timeout: float = 300) -> float:
    """Create Datasets and wait until all are Ready; returns the seconds it took."""
    obs = Observer(stack.url, stack.namespace)
    await obs.start(sess, ["datasets"])
    t0 = time.monotonic()
    await create_all(sess, stack.url, stack.namespace, "datasets", [dataset(n) for n in names], 50)
    ok = await obs.wait(lambda: len(obs.first("datasets", ["Ready"])) >= len(names), timeout)
    await obs.stop()
    if not ok:
        raise RuntimeError(f"Datasets not Ready after {timeout}s:\n{stack.operator.log_tail() if stack.operator else ''}")
    return time.monotonic() - t0


async def run_trainingruns(stack: Stack, sess: aiohttp.ClientSession, bodies: list[dict[str, Any]],
                           concurrency: int, timeout: float) -> Batch:
    """Create the TrainingRuns; wait until every one has its Job and then every one is terminal."""
    obs = Observer(stack.url, stack.namespace)
    await obs.start(sess, ["trainingruns", "jobs"])
    names = {b["metadata"]["name"] for b in bodies}
    rec0 = reconcile_stats(stack)
    probe: list[float] = []
    probe_task = asyncio.create_task(api_probe(sess, f"{collection(stack.url, stack.namespace, 'configmaps')}/iris-data",
                                               probe))
    counts0 = stack.counts()
    ml0 = stack.mlflow.proxy.snapshot()
    cpu0 = stack.cpu()
    t0 = time.monotonic()
    created_task = asyncio.create_task(create_all(sess, stack.url, stack.namespace, "trainingruns", bodies,
                                                  concurrency))
    deadline = t0 + timeout
    ok_jobs = await obs.wait(lambda: names <= obs.jobs.keys(), timeout)
    t_jobs = max((obs.jobs[n] for n in names if n in obs.jobs), default=math.nan)
    cpu_jobs, counts_jobs, ml_jobs = stack.cpu(), stack.delta(counts0), stack.mlflow.proxy.calls_since(ml0)
    terminal = ("Succeeded", "Rejected", "Failed")
    ok_done = ok_jobs and await obs.wait(
        lambda: names <= obs.first("trainingruns", terminal).keys(), max(deadline - time.monotonic(), 1))
    done = obs.first("trainingruns", terminal)
    t_done = max((done[n] for n in names if n in done), default=math.nan)
    cpu_done, counts_done, ml_done = stack.cpu(), stack.delta(counts0), stack.mlflow.proxy.calls_since(ml0)
    created = await created_task
    probe_task.cancel()
    await obs.stop()
    _, hwm = proc_mem_mb(stack.operator_pid)
    rec1 = reconcile_stats(stack)
    return Batch(len(bodies), t0, created, obs, t_jobs, t_done, cpu0, cpu_jobs, cpu_done, counts_jobs,
                 counts_done, ml_jobs, ml_done, hwm, ok_done, probe, stack.mlflow.proxy.latency_since(t0),
                 (rec1[0] - rec0[0], rec1[1] - rec0[1]), stack.target)


async def api_probe(sess: aiohttp.ClientSession, url: str, out: list[float], every: float = 0.05) -> None:
    while True:
        t = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError):
            async with sess.get(url) as resp:
                await resp.read()
        out.append(time.monotonic() - t)
        await asyncio.sleep(every)


def reconcile_stats(stack: Stack, kind: str = "TrainingRun") -> tuple[float, float]:
    """(count, sum seconds) of the operator's reconcile-duration histogram for one kind."""
    count = total = 0.0
    try:
        text = stack.operator.metrics() if stack.operator else ""
    except Exception:
        return math.nan, math.nan
    for line in text.splitlines():
        if line.startswith("dockyard_reconcile_duration_seconds_count") and f'kind="{kind}"' in line:
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("dockyard_reconcile_duration_seconds_sum") and f'kind="{kind}"' in line:
            total = float(line.rsplit(" ", 1)[1])
    return count, total


# -- the emulator's own ceiling ---------------------------------------------------------------

_CEILING_CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, seconds, conc, method):
    n = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker():
            nonlocal n
            while time.monotonic() < stop:
                body = json.dumps({"status": {"message": f"ceiling {n}"}}) if method == "PATCH" else None
                async with s.request(method, url, data=body,
                                     headers={"Content-Type": "application/merge-patch+json"}) as r:
                    await r.read()
                    assert r.status < 400, (r.status, await r.text())
                n += 1
        await asyncio.gather(*(worker() for _ in range(conc)))
    print(n / seconds)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def emulator_ceiling(stack: Stack, tr_name: str, job_name: str, seconds: float = 4.0) -> str:
    """Requests/s the emulator serves to a client in another process (so the client costs this
    process nothing), for three request shapes the operator makes, with the objects already loaded.
    Emulator target only."""
    import subprocess

    if stack.target != "emulator":
        return (f"emulator ceiling: skipped (target {stack.target}: there is no emulator; the cluster processes' "
                f"CPU is in the cpu report above)")

    def rate(url: str, conc: int, method: str) -> float:
        out = subprocess.run([sys.executable, "-c", _CEILING_CLIENT, url, str(seconds), str(conc), method],
                             capture_output=True, text=True, timeout=seconds + 60)
        return float(out.stdout.strip() or "nan")

    tr = f"{collection(stack.url, stack.namespace, 'trainingruns')}/{tr_name}"
    pods = f"{collection(stack.url, stack.namespace, 'pods')}?labelSelector=job-name%3D{job_name}"
    get_rate = rate(tr, 16, "GET")
    patch_rate = rate(tr + "/status", 16, "PATCH")
    list_rate = rate(pods, 4, "GET")
    return (f"emulator ceiling (client in a separate process, objects loaded): GET one TrainingRun {get_rate:.0f} req/s; "
            f"PATCH its status {patch_rate:.0f} req/s; list Pods by job-name label {list_rate:.1f} req/s "
            f"({1000 / list_rate:.0f} ms each: the emulator deep-copies every Pod of the namespace, then filters)")
