"""Start and stop a real Kubernetes control plane on this machine, envtest-style but complete.

Processes (binaries from :mod:`tests.localcluster.build`), in start order:

1. etcd, data in ``<state>/etcd`` (no fsync: a test cluster trades durability for speed);
2. kube-apiserver on the node IP, with a self-signed serving certificate, service-account
   signing keys, ``--authorization-mode=Node,RBAC``, the default admission plugins plus
   PodSecurity and OwnerReferencesPermissionEnforcement, and an audit log of every request
   made by a ServiceAccount of the ``dockyard`` namespace (the operator's identity);
3. kube-controller-manager with its default controllers (job, deployment, replicaset,
   garbage collector, namespace, serviceaccount, token, endpointslice, node-ipam, ...) and
   kube-scheduler;
4. bootstrap objects: the ``kube-dns`` Service, CoreDNS's RBAC, a default StorageClass;
5. the node agent (:mod:`tests.localcluster.nodeagent`), which registers the Node;
6. kube-proxy (nftables mode) and CoreDNS, which need the Node and the Services.

Each start waits on the component's health endpoint with a deadline and, on failure, raises
with the tail of that component's log. ``state.json`` in the state directory records the
processes so that ``down`` (or another process) can find and stop them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..processes import stop_process
from . import build, network
from .pki import CertPaths, Pki, write_kubeconfig

NODE_NAME = "dockyard-node"
# Operators run as ServiceAccounts of these namespaces: the chart's default release namespace
# and the one the tests' operator identity lives in (tests/plugins/kube.py).
OPERATOR_NAMESPACES = ("dockyard", "dockyard-tests")


def default_state_dir() -> Path:
    return Path(os.environ.get("DOCKYARD_CLUSTER_DIR", "/tmp/dockyard-cluster"))


@dataclass
class Ports:
    api: int = 6443
    etcd_client: int = 2379
    etcd_peer: int = 2380
    controller_manager: int = 10257
    scheduler: int = 10259
    kubelet: int = 10250
    proxy_healthz: int = 10256
    proxy_metrics: int = 10249
    dns_health: int = 18080
    dns_ready: int = 18181


@dataclass
class ClusterState:
    """What ``state.json`` holds: enough for another process to use or stop the cluster."""

    server: str
    kubeconfig: str
    bin_dir: str
    node_name: str
    node_ip: str
    dns_ip: str
    pod_cidr: str
    service_cidr: str
    audit_log: str
    pids: dict[str, int] = field(default_factory=dict)
    # /proc/<pid>/stat start times, so a pid reused by an unrelated process is never signalled
    starts: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        try:
            return cls(**json.loads((state_dir / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, state_dir: Path) -> None:
        tmp = state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.rename(state_dir / "state.json")


class StartupError(RuntimeError):
    pass


AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Operators run as ServiceAccounts of these namespaces: record what they call (verb,
  # resource, subresource, response code) so RBAC can be checked against real use.
  - level: Metadata
    userGroups: [{", ".join(f'"system:serviceaccounts:{n}"' for n in OPERATOR_NAMESPACES)}]
  - level: None
"""

LOCAL_RBAC = [
    # The node agent's second identity: provision PersistentVolumes, read namespace labels and
    # the results of instant mode.
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "dockyard-local:provisioner"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:persistent-volume-provisioner"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dockyard-local:provisioner"}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "dockyard-local:namespace-reader"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                   "resourceNames": ["dockyard-node-agent-instant"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "dockyard-local:namespace-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "dockyard-local:namespace-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dockyard-local:provisioner"}],
    },

    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "dockyard-local:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "dockyard-local:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "dockyard-local:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    },
]


class ControlPlane:
    """The cluster's processes. ``start()`` brings everything up; ``stop()`` takes it down."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        layout: network.NetworkLayout | None = None,
        ports: Ports | None = None,
        node_agent: bool = True,
        verbose: bool = False,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.layout = layout or network.NetworkLayout()
        self.ports = ports or Ports()
        self.with_node_agent = node_agent
        self.verbose = verbose
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = self.state_dir / "logs"
        self.pki_dir = self.state_dir / "pki"
        self.server = f"https://{self.layout.node_ip}:{self.ports.api}"
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.audit_log = self.logs / "audit.log"
        self.bin_dir: Path | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ public

    def start(self, timeout: float = 180.0) -> ClusterState:
        if os.geteuid() != 0:
            raise StartupError(
                "the local cluster needs root: Pods get their own network namespaces and the "
                "apiserver listens on a node address of a dummy interface"
            )
        t0 = time.monotonic()
        self.bin_dir = build.build().bin_dir
        self.timings["build"] = time.monotonic() - t0
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A fresh cluster each time: a new etcd and fresh logs (the PKI is kept, so kubeconfigs
        # handed out earlier stay valid for the next cluster).
        for stale in (self.state_dir / "etcd", self.logs, self.state_dir / "node"):
            shutil.rmtree(stale, ignore_errors=True)
        self.logs.mkdir()
        network.setup_node(self.layout)
        pki = self._pki()
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd(deadline)
            self._start_apiserver(pki, deadline)
            self._start_controllers(pki, deadline)
            self._bootstrap(deadline)
            if self.with_node_agent:
                self._start_node_agent(pki, deadline)
                self._start_kube_proxy(pki, deadline)
                self._start_coredns(pki, deadline)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0 - self.timings["build"]
        state = self.state()
        state.save(self.state_dir)
        return state

    def state(self) -> ClusterState:
        return ClusterState(
            server=self.server,
            kubeconfig=str(self.kubeconfig),
            bin_dir=str(self.bin_dir),
            node_name=NODE_NAME,
            node_ip=self.layout.node_ip,
            dns_ip=self.layout.dns_service_ip,
            pod_cidr=self.layout.pod_cidr,
            service_cidr=self.layout.service_cidr,
            audit_log=str(self.audit_log),
            pids={name: p.pid for name, p in self.procs.items()},
            starts={name: _start_time(p.pid) for name, p in self.procs.items()},
            started_at=time.time(),
        )

    def stop(self) -> None:
        # Reverse start order: nothing is left talking to an apiserver that is gone.
        for name in reversed(list(self.procs)):
            _terminate(self.procs.pop(name))
        stop_recorded(self.state_dir)

    # ------------------------------------------------------------------ pieces

    def _pki(self) -> Pki:
        pki = Pki(self.pki_dir)
        lay = self.layout
        pki.issue(
            "apiserver", "kube-apiserver", server=True,
            dns_names=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{lay.cluster_domain}", "localhost"),
            ips=(lay.node_ip, lay.api_service_ip, "127.0.0.1"),
        )
        pki.issue("kubelet-serving", NODE_NAME, server=True, dns_names=(NODE_NAME,), ips=(lay.node_ip,))
        for component in ("controller-manager", "scheduler"):
            pki.issue(f"{component}-serving", f"kube-{component}", server=True,
                      dns_names=("localhost",), ips=("127.0.0.1",))
        pki.service_account_keys()
        users = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kube-proxy": ("system:kube-proxy", ()),
            "node": (f"system:node:{NODE_NAME}", ("system:nodes",)),
            "coredns": ("system:coredns", ()),
            "provisioner": ("dockyard-local:provisioner", ()),
            "front-proxy-client": ("front-proxy-client", ()),
        }
        for name, (cn, orgs) in users.items():
            cert = pki.issue(name, cn, organizations=orgs, client=True)
            write_kubeconfig(self.state_dir / f"{name}.kubeconfig", self.server, pki.ca.cert, user=cn, client=cert)
        return pki

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})}, cwd=self.state_dir,
        )
        log.close()
        self.procs[name] = proc
        # Recorded at once, so a launcher that dies half-way leaves nothing `down` cannot find.
        self.state().save(self.state_dir)
        return proc

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _wait(self, name: str, url: str, deadline: float, *, client: CertPaths | None = None,
              expect: tuple[int, ...] = (200,)) -> None:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.check_hostname = False
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        proc = self.procs.get(name)
        started = time.monotonic()
        last = ""
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise StartupError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx if url.startswith("https") else None) as r:
                    if r.status in expect:
                        self.timings[name] = time.monotonic() - started
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.2)
        raise StartupError(f"{name} not healthy at {url} ({last}):\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _start_etcd(self, deadline: float) -> None:
        p = self.ports
        self._spawn("etcd", [
            self._bin("etcd"),
            "--name", "local",
            "--data-dir", str(self.state_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{p.etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{p.etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
            "--initial-cluster", f"local=http://127.0.0.1:{p.etcd_peer}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes", str(4 * 1024**3),
            "--log-level", "warn",
        ])
        self._wait("etcd", f"http://127.0.0.1:{p.etcd_client}/health", deadline)

    def _start_apiserver(self, pki: Pki, deadline: float) -> None:
        d = self.pki_dir
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        lay, p = self.layout, self.ports
        self._spawn("kube-apiserver", [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
            f"--bind-address={lay.node_ip}",
            f"--advertise-address={lay.node_ip}",
            f"--secure-port={p.api}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-account-issuer=https://kubernetes.default.svc.{lay.cluster_domain}",
            f"--service-cluster-ip-range={lay.service_cidr}",
            "--authorization-mode=Node,RBAC",
            # Added to the default set (which already has NodeRestriction, ServiceAccount, ...).
            "--enable-admission-plugins=PodSecurity,OwnerReferencesPermissionEnforcement",
            f"--requestheader-client-ca-file={d / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={d / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={d / 'front-proxy-client.key'}",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={d / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
            "--profiling=false",
            "--v=1",
        ])
        self._wait("kube-apiserver", f"{self.server}/readyz", deadline, client=pki.issue("admin", "kubernetes-admin"))
        write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, user="kubernetes-admin",
                         client=pki.issue("admin", "kubernetes-admin"))

    def _start_controllers(self, pki: Pki, deadline: float) -> None:
        d, lay, p = self.pki_dir, self.layout, self.ports
        kcm_cfg = str(self.state_dir / "controller-manager.kubeconfig")
        self._spawn("kube-controller-manager", [
            self._bin("kube-controller-manager"),
            f"--kubeconfig={kcm_cfg}",
            f"--authentication-kubeconfig={kcm_cfg}",
            f"--authorization-kubeconfig={kcm_cfg}",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={d / 'ca.crt'}",
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={lay.pod_cidr}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={lay.service_cidr}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.controller_manager}",
            f"--tls-cert-file={d / 'controller-manager-serving.crt'}",
            f"--tls-private-key-file={d / 'controller-manager-serving.key'}",
            "--controllers=*",
            "--v=1",
        ])
        sched_cfg = str(self.state_dir / "scheduler.kubeconfig")
        self._spawn("kube-scheduler", [
            self._bin("kube-scheduler"),
            f"--kubeconfig={sched_cfg}",
            f"--authentication-kubeconfig={sched_cfg}",
            f"--authorization-kubeconfig={sched_cfg}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.scheduler}",
            f"--tls-cert-file={d / 'scheduler-serving.crt'}",
            f"--tls-private-key-file={d / 'scheduler-serving.key'}",
            "--v=1",
        ])
        self._wait("kube-controller-manager", f"https://127.0.0.1:{p.controller_manager}/healthz", deadline)
        self._wait("kube-scheduler", f"https://127.0.0.1:{p.scheduler}/healthz", deadline)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        r = subprocess.run(
            [self._bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True,
        )
        if check and r.returncode != 0:
            raise StartupError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def _apply(self, objs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=dockyard-localcluster", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))

    def _bootstrap(self, deadline: float) -> None:
        lay = self.layout
        # The default ServiceAccount (made by the serviceaccount controller) is what every
        # namespace needs before its first Pod; wait for it in kube-system as a sign of life.
        while time.monotonic() < deadline:
            if self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).strip():
                break
            time.sleep(0.2)
        else:
            raise StartupError(f"no default ServiceAccount:\n{self.log_tail('kube-controller-manager')}")
        dns_service = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": lay.dns_service_ip, "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ]},
        }
        # CoreDNS runs on the node (a host process), so the Service has no selector and one
        # EndpointSlice naming the node address.
        dns_endpoints = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kube-dns-node", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": "kube-dns",
                                    "endpointslice.kubernetes.io/managed-by": "dockyard-localcluster"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [lay.node_ip], "conditions": {"ready": True}, "nodeName": NODE_NAME}],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        }
        storage_class = {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "dockyard.dev/local-node-agent",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        self._apply([*LOCAL_RBAC, dns_service, dns_endpoints, storage_class])

    def _start_node_agent(self, pki: Pki, deadline: float) -> None:
        lay, p = self.layout, self.ports
        self._spawn("node-agent", [
            sys.executable, "-m", "tests.localcluster.nodeagent",
            "--kubeconfig", str(self.state_dir / "node.kubeconfig"),
            "--provisioner-kubeconfig", str(self.state_dir / "provisioner.kubeconfig"),
            "--node-name", NODE_NAME,
            "--node-ip", lay.node_ip,
            "--cluster-dns", lay.dns_service_ip,
            "--cluster-domain", lay.cluster_domain,
            "--root", str(self.state_dir / "node"),
            "--port", str(p.kubelet),
            "--serving-cert", str(self.pki_dir / "kubelet-serving.crt"),
            "--serving-key", str(self.pki_dir / "kubelet-serving.key"),
            "--client-ca", str(self.pki_dir / "ca.crt"),
            *(["--verbose"] if self.verbose else []),
        ], env={"PYTHONPATH": str(build.REPO)})
        # Ready when the Node reports Ready and has its Pod CIDR from the node-ipam controller.
        while time.monotonic() < deadline:
            proc = self.procs["node-agent"]
            if proc.poll() is not None:
                raise StartupError(f"node agent exited with {proc.returncode}:\n{self.log_tail('node-agent')}")
            out = self.kubectl("get", "node", NODE_NAME, "-o",
                               "jsonpath={.spec.podCIDR} {.status.conditions[?(@.type=='Ready')].status}",
                               check=False)
            parts = out.split()
            if len(parts) == 2 and parts[1] == "True":
                return
            time.sleep(0.2)
        raise StartupError(f"node {NODE_NAME} not Ready:\n{self.log_tail('node-agent')}")

    def _start_kube_proxy(self, pki: Pki, deadline: float) -> None:
        lay, p = self.layout, self.ports
        self._spawn("kube-proxy", [
            self._bin("kube-proxy"),
            f"--kubeconfig={self.state_dir / 'kube-proxy.kubeconfig'}",
            f"--hostname-override={NODE_NAME}",
            "--proxy-mode=nftables",
            f"--cluster-cidr={lay.pod_cidr}",
            f"--healthz-bind-address=127.0.0.1:{p.proxy_healthz}",
            f"--metrics-bind-address=127.0.0.1:{p.proxy_metrics}",
            "--conntrack-max-per-core=0",
            "--v=1",
        ])
        self._wait("kube-proxy", f"http://127.0.0.1:{p.proxy_healthz}/healthz", deadline, expect=(200,))

    def _start_coredns(self, pki: Pki, deadline: float) -> None:
        lay, p = self.layout, self.ports
        corefile = self.state_dir / "Corefile"
        corefile.write_text(
            f"""{lay.cluster_domain}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {lay.node_ip}
    errors
    health 127.0.0.1:{p.dns_health}
    ready 127.0.0.1:{p.dns_ready}
    kubernetes {lay.cluster_domain} in-addr.arpa ip6.arpa {{
        kubeconfig {self.state_dir / 'coredns.kubeconfig'} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""
        )
        self._spawn("coredns", [self._bin("coredns"), "-conf", str(corefile)])
        self._wait("coredns", f"http://127.0.0.1:{p.dns_ready}/ready", deadline)


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    stop_process(proc, grace)


def _start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); 0 if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int, start: int | None = None) -> bool:
    """The process exists (and, given ``start``, is the one started then) and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return False
    return start is None or start == 0 or int(fields[19]) == start


def stop_recorded(state_dir: Path, grace: float = 10.0) -> None:
    """Stop the processes ``state.json`` names (started by this or another process), then
    remove the node's network pieces."""
    state = ClusterState.load(state_dir)
    if state is not None:
        ours = {name: pid for name, pid in state.pids.items() if _pid_alive(pid, state.starts.get(name))}
        for name in reversed(list(ours)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ours[name], signal.SIGTERM)
        end = time.monotonic() + grace
        for name, pid in ours.items():
            while _pid_alive(pid, state.starts.get(name)) and time.monotonic() < end:
                time.sleep(0.1)
            if _pid_alive(pid, state.starts.get(name)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        (state_dir / "state.json").unlink(missing_ok=True)
    network.teardown_node()


def running_cluster(state_dir: Path | None = None) -> ClusterState | None:
    """The cluster ``state.json`` describes, if its apiserver process is still alive."""
    state = ClusterState.load((state_dir or default_state_dir()).resolve())
    if state is None:
        return None
    pid = state.pids.get("kube-apiserver")
    return state if pid and _pid_alive(pid, state.starts.get("kube-apiserver")) else None
