"""The node agent: a kubelet for the local cluster, running Pods as local processes.

It is an ordinary API client with the node's identity (``system:node:<name>``, so the Node
authorizer and NodeRestriction admission apply to it exactly as to a kubelet):

* registers a Ready Node with capacity, addresses and daemon endpoint, and renews its Lease
  in ``kube-node-lease``; the node-ipam controller assigns its Pod CIDR;
* watches the Pods the scheduler binds to it and runs each one: a network namespace with the
  Pod's own IP (:mod:`tests.localcluster.network`), volumes (emptyDir, configMap, secret,
  projected incl. service-account tokens from the TokenRequest API, downwardAPI,
  persistentVolumeClaim), init containers in order, then every container, each in its own
  mount namespace on an overlay of the host (:mod:`tests.localcluster.shim`) with the
  security context's uid/gid, read-only root and no_new_privs;
* restarts containers by ``restartPolicy`` with the kubelet's crash-loop backoff, runs
  startup/liveness/readiness probes (httpGet, tcpSocket, exec: ``nsenter`` into the
  container's namespaces and root as its numeric uid/gid; a failure's output, the command's
  stdout and stderr, is in the ``Unhealthy`` event as the kubelet reports it), enforces
  ``activeDeadlineSeconds``, honours graceful deletion, and reports status as a kubelet does:
  phase, conditions, podIP(s), hostIP, container states with exit codes, reasons
  (``Completed``, ``Error``, ``StartError``, ``ErrImagePull``, ``ImagePullBackOff``,
  ``CreateContainerConfigError``, ``CrashLoopBackOff``, ``DeadlineExceeded``) and
  termination messages (``FallbackToLogsOnError`` included);
* serves ``/containerLogs`` on its port over TLS, so ``kubectl logs`` and the ``pods/log``
  subresource work through the apiserver;
* with a second credential (``--provisioner-kubeconfig``), provisions hostPath
  PersistentVolumes for claims of the ``local`` StorageClass, like local-path-provisioner.

What it does not do: pull images (see :mod:`tests.localcluster.images`), enforce CPU or
memory limits (no cgroups), give Pods their own PID namespace, or run ephemeral containers.
A namespace labelled ``dockyard.dev/node-agent-mode=instant`` gets its Pods "run" without
any process: Job Pods succeed at once (with the termination message that the namespace's
ConfigMap ``dockyard-node-agent-instant`` holds under the Pod's
``app.kubernetes.io/component`` label) and serving Pods turn Ready. Benchmarks and
fault-survival tests use it to measure the operator rather than the workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import platform
import shutil
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from . import images, network
from .apiclient import Api, ApiError
from .podspec import ConfigError, expand_vars, resource_field_value
from .shim import EMPTIED

log = logging.getLogger("dockyard.nodeagent")

Obj = dict[str, Any]
SHIM = str(Path(__file__).with_name("shim.py"))
KUBELET_VERSION = "v1.36.3"
TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
LEASE_SECONDS = 40
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
INSTANT_LABEL = "dockyard.dev/node-agent-mode"
INSTANT_RESULTS = "dockyard-node-agent-instant"  # ConfigMap: component label -> termination message


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_path(ns: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}" + (f"/{sub}" if sub else "")


# ----------------------------------------------------------------------------------- IPAM


class Ipam:
    """Pod IPs from the node's Pod CIDR; .1 is left for nothing (the node has its own IP)."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.used: dict[str, str] = {}  # ip -> pod uid

    def allocate(self, uid: str) -> str:
        for ip, owner in self.used.items():
            if owner == uid:
                return ip
        for host in list(self.net.hosts())[1:]:
            if str(host) not in self.used:
                self.used[str(host)] = uid
                return str(host)
        raise IpamExhausted(f"no free IP in the Pod CIDR {self.net}")

    def release_owner(self, uid: str) -> None:
        for ip in [ip for ip, owner in self.used.items() if owner == uid]:
            del self.used[ip]


class IpamExhausted(RuntimeError):
    pass


# ----------------------------------------------------------------------------------- containers


@dataclass
class ContainerState:
    name: str
    image: str
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    pid: int | None = None
    log_path: Path | None = None

    def status(self) -> Obj:
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"dockyard-local://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.pid is not None or "terminated" in self.state:
            out["containerID"] = f"dockyard://{self.name}-{self.restart_count}"
        return out


@dataclass
class ExitResult:
    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str

    def terminated(self, container_id: str) -> Obj:
        t: Obj = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                  "finishedAt": self.finished_at, "containerID": container_id}
        if self.message:
            t["message"] = self.message
        return t


class PodGone(Exception):
    pass


class PodWorker:
    """Runs one Pod from sandbox to deletion."""

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.spec: Obj = pod["spec"]
        self.dir = agent.root / "pods" / self.uid
        self.pod_ip: str | None = None
        self.netns: str | None = None
        self.init_states = {c["name"]: ContainerState(c["name"], c.get("image", ""))
                            for c in self.spec.get("initContainers") or []}
        self.states = {c["name"]: ContainerState(c["name"], c.get("image", ""))
                       for c in self.spec.get("containers") or []}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self.sandbox_ready = False
        self.initialized = not self.init_states
        self.terminating = asyncio.Event()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.creds: dict[str, tuple[int, int]] = {}  # container -> (uid, gid) it runs as
        self.volumes: dict[str, Path] = {}
        self.task: asyncio.Task[None] | None = None
        self._status_dirty = asyncio.Event()
        self._last_status: Obj | None = None
        self._conditions: dict[str, Obj] = {}
        self._writer: asyncio.Task[None] | None = None
        self.instant = False
        self.finished = asyncio.Event()
        self._deleter: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"pod-{self.ns}/{self.name}")
        self._writer = asyncio.create_task(self._status_writer(), name=f"status-{self.ns}/{self.name}")

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.terminating.is_set():
            self.terminating.set()
            self._deleter = asyncio.create_task(self._finish_deletion(), name=f"delete-{self.ns}/{self.name}")

    async def _main(self) -> None:
        try:
            self.instant = await self.agent.instant_mode(self.ns)
            await self._setup_sandbox()
            self.mark_dirty()
            await self._prepare_volumes()
            if self.instant:
                await self._run_instant()
            else:
                await self._run_containers()
            if self.phase in ("Succeeded", "Failed"):
                await self._release_network()  # as kubelet tears the sandbox down: the IP is free again
        except PodGone:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not take the agent down; the Pod shows it
            log.exception("pod %s/%s failed in the agent", self.ns, self.name)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", str(e)[:1000]
            self.mark_dirty()
        self.finished.set()

    async def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.spec.get("hostNetwork"):
            self.pod_ip = self.agent.node_ip
        else:
            self.pod_ip = await self._allocate_ip()
            if not self.instant:
                self.netns = await asyncio.to_thread(network.create_pod_network, self.uid, self.pod_ip)
        (self.dir / "etc").mkdir(exist_ok=True)
        (self.dir / "etc" / "resolv.conf").write_text(self._resolv_conf())
        (self.dir / "etc" / "hosts").write_text(self._hosts())
        (self.dir / "etc" / "hostname").write_text(self._hostname() + "\n")
        self.sandbox_ready = True

    async def _allocate_ip(self) -> str:
        """An IP of the node's Pod CIDR; when none is free the Pod waits in ContainerCreating
        and retries, as kubelet does after FailedCreatePodSandBox (it does not fail the Pod)."""
        while True:
            try:
                return self.agent.ipam.allocate(self.uid)
            except IpamExhausted as e:
                if self.message != str(e):
                    log.warning("pod %s/%s: %s; retrying", self.ns, self.name, e)
                    self.message = str(e)
                    self.mark_dirty()
                if self.terminating.is_set():
                    raise PodGone from e
                await asyncio.sleep(2.0)

    async def _release_network(self) -> None:
        if self.netns is not None:
            await asyncio.to_thread(network.delete_pod_network, self.uid, self.pod_ip)
            self.netns = None
        if not self.spec.get("hostNetwork"):
            self.agent.ipam.release_owner(self.uid)

    def _hostname(self) -> str:
        return str(self.spec.get("hostname") or self.name)[:63]

    def _resolv_conf(self) -> str:
        policy = self.spec.get("dnsPolicy", "ClusterFirst")
        cfg = self.spec.get("dnsConfig") or {}
        if policy == "ClusterFirst" and self.spec.get("hostNetwork"):
            policy = "Default"
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            d = self.agent.cluster_domain
            servers = [self.agent.cluster_dns]
            search = [f"{self.ns}.svc.{d}", f"svc.{d}", d]
            options = ["ndots:5"]
        elif policy == "None":
            servers, search, options = [], [], []
        else:
            return Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
        servers += cfg.get("nameservers") or []
        search += cfg.get("searches") or []
        options += [o["name"] + (f":{o['value']}" if o.get("value") else "") for o in cfg.get("options") or []]
        lines = [f"nameserver {s}" for s in servers]
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        return "\n".join(lines) + "\n"

    def _hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        names = [self._hostname()]
        if self.spec.get("subdomain"):
            names.insert(0, f"{self._hostname()}.{self.spec['subdomain']}.{self.ns}.svc.{self.agent.cluster_domain}")
        lines.append(f"{self.pod_ip}\t{' '.join(names)}")
        for alias in self.spec.get("hostAliases") or []:
            lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ volumes

    async def _prepare_volumes(self) -> None:
        vol_root = self.dir / "volumes"
        vol_root.mkdir(exist_ok=True)
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        pending = list(self.spec.get("volumes") or [])
        backoff = 1.0
        while pending:
            vol = pending[0]
            try:
                self.volumes[vol["name"]] = await self._volume(vol, vol_root / vol["name"], fs_group)
                pending.pop(0)
            except ConfigError as e:
                # The kubelet keeps such a Pod in ContainerCreating and reports FailedMount.
                for st in (*self.init_states.values(), *self.states.values()):
                    st.state = {"waiting": {"reason": "ContainerCreating"}}
                await self.agent.event(self.pod, "Warning", "FailedMount", e.message)
                if await self._wait_terminating(backoff):
                    raise PodGone from None
                backoff = min(backoff * 2, 30.0)

    async def _volume(self, vol: Obj, path: Path, fs_group: int | None) -> Path:
        if "emptyDir" in vol:
            path.mkdir(exist_ok=True)
            path.chmod(0o777)
            return path
        if "configMap" in vol or "secret" in vol or "projected" in vol or "downwardAPI" in vol:
            files = await self._volume_files(vol)
            if files is None:  # optional source that does not exist: an empty directory
                files = {}
            write_atomic_dir(path, files, default_mode=self._default_mode(vol), fs_group=fs_group)
            return path
        if "persistentVolumeClaim" in vol:
            return await self._pvc_path(vol["persistentVolumeClaim"]["claimName"])
        if "hostPath" in vol:
            p = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate",):
                p.mkdir(parents=True, exist_ok=True)
            return p
        # ephemeral, csi, image, ...: not supported on this node
        raise ConfigError("FailedMount", f"volume {vol['name']!r}: type not supported by the node agent")

    @staticmethod
    def _default_mode(vol: Obj) -> int:
        for key in ("configMap", "secret", "projected", "downwardAPI"):
            if key in vol and vol[key].get("defaultMode") is not None:
                return int(vol[key]["defaultMode"])
        return 0o644

    async def _volume_files(self, vol: Obj) -> dict[str, tuple[bytes, int | None]] | None:
        if "configMap" in vol or "secret" in vol:
            kind = "ConfigMap" if "configMap" in vol else "Secret"
            src = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
            name = src.get("name") or src.get("secretName")
            return await self._source_files(kind, name, src.get("items"), bool(src.get("optional")))
        if "downwardAPI" in vol:
            return self._downward_files(vol["downwardAPI"].get("items") or [])
        files: dict[str, tuple[bytes, int | None]] = {}
        for source in vol["projected"].get("sources") or []:
            if "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                src = source["configMap"] if kind == "ConfigMap" else source["secret"]
                got = await self._source_files(kind, src["name"], src.get("items"), bool(src.get("optional")))
                files.update(got or {})
            elif "downwardAPI" in source:
                files.update(self._downward_files(source["downwardAPI"].get("items") or []))
            elif "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                token = await self.agent.service_account_token(
                    self.pod, sat.get("audience"), int(sat.get("expirationSeconds") or 3607)
                )
                files[sat["path"]] = (token.encode(), None)
            else:
                raise ConfigError("FailedMount", f"projected source {sorted(source)} not supported by the node agent")
        return files

    async def _source_files(self, kind: str, name: str, items: list[Obj] | None,
                            optional: bool) -> dict[str, tuple[bytes, int | None]] | None:
        try:
            data = await self.agent.source_data(kind, self.ns, name)
        except ApiError as e:
            if e.status != 403:
                raise
            # The Node authorizer learns of a Pod's ConfigMaps and Secrets from its graph, which
            # can trail the binding by a moment; the kubelet retries the mount (FailedMount).
            raise ConfigError("FailedMount", str(e)) from None
        if data is None:
            if optional:
                return None
            raise ConfigError("FailedMount", f'{kind.lower()} "{name}" not found')
        if not items:
            return {k: (v, None) for k, v in data.items()}
        out: dict[str, tuple[bytes, int | None]] = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise ConfigError("FailedMount", f'{kind.lower()} "{name}": key "{item["key"]}" not found')
            out[item["path"]] = (data[item["key"]], item.get("mode"))
        return out

    def _downward_files(self, items: list[Obj]) -> dict[str, tuple[bytes, int | None]]:
        out: dict[str, tuple[bytes, int | None]] = {}
        for item in items:
            if "fieldRef" in item:
                value = self.field_value(item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                container = next((c for c in self.spec.get("containers") or []
                                  if c["name"] == ref.get("containerName")), {})
                value = resource_field_value(container, ref)
            out[item["path"]] = (value.encode(), item.get("mode"))
        return out

    async def _pvc_path(self, claim: str) -> Path:
        pvc = await self.agent.api.get(f"/api/v1/namespaces/{quote(self.ns)}/persistentvolumeclaims/{quote(claim)}")
        if pvc is None:
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not pv_name or (pvc.get("status") or {}).get("phase") != "Bound":
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self.agent.api.get(f"/api/v1/persistentvolumes/{quote(pv_name)}")
        spec = (pv or {}).get("spec") or {}
        local = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not local:
            raise ConfigError("FailedMount", f"persistentvolume {pv_name} is neither hostPath nor local")
        Path(local).mkdir(parents=True, exist_ok=True)
        return Path(local)

    def field_value(self, fp: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.ns,
            "metadata.uid": self.uid,
            "spec.nodeName": self.agent.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": self.pod_ip or "",
            "status.podIPs": self.pod_ip or "",
            "status.hostIP": self.agent.node_ip,
            "status.hostIPs": self.agent.node_ip,
        }
        if fp in simple:
            return simple[fp]
        for section in ("labels", "annotations"):
            if fp == f"metadata.{section}":
                return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(section) or {}).items()))
            pre = f"metadata.{section}['"
            if fp.startswith(pre) and fp.endswith("']"):
                return str((meta.get(section) or {}).get(fp[len(pre):-2], ""))
        raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {fp!r}")

    # ------------------------------------------------------------ containers

    async def _run_containers(self) -> None:
        policy = self.spec.get("restartPolicy", "Always")
        deadline_task = asyncio.create_task(self._active_deadline())
        try:
            for c in self.spec.get("initContainers") or []:
                st = self.init_states[c["name"]]
                while True:
                    res = await self._run_container(c, st, init=True)
                    if res is None:
                        raise PodGone
                    if res.exit_code == 0:
                        break
                    if policy == "Never":
                        self.phase = "Failed"
                        self.mark_dirty()
                        return
                    if await self._crash_backoff(st):
                        raise PodGone
            self.initialized = True
            self.mark_dirty()
            loops = [asyncio.create_task(self._container_loop(c, policy)) for c in self.spec.get("containers") or []]
            await asyncio.gather(*loops)
            if not self.terminating.is_set():
                results = [st.state.get("terminated", {}).get("exitCode") for st in self.states.values()]
                self.phase = "Succeeded" if all(r == 0 for r in results) else "Failed"
                self.mark_dirty()
        finally:
            deadline_task.cancel()

    async def _container_loop(self, c: Obj, policy: str) -> None:
        st = self.states[c["name"]]
        while True:
            res = await self._run_container(c, st, init=False)
            if res is None or self.terminating.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and res.exit_code == 0):
                return
            if await self._crash_backoff(st):
                return

    async def _crash_backoff(self, st: ContainerState) -> bool:
        """Wait the crash-loop delay (10 s doubling to 5 min); True if the Pod is going away."""
        delay = min(BACKOFF_START * 2**st.restart_count, BACKOFF_MAX)
        st.last_state = {"terminated": st.state.get("terminated", {})} if "terminated" in st.state else {}
        st.state = {"waiting": {"reason": "CrashLoopBackOff",
                                "message": f"back-off {int(delay)}s restarting failed container={st.name} "
                                           f"pod={self.name}_{self.ns}({self.uid})"}}
        st.ready = False
        self.mark_dirty()
        if await self._wait_terminating(delay):
            return True
        st.restart_count += 1  # counted when the container is started again, as the kubelet does
        return False

    async def _wait_terminating(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.terminating.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    async def _active_deadline(self) -> None:
        seconds = self.spec.get("activeDeadlineSeconds")
        if not seconds:
            return
        await asyncio.sleep(float(seconds))
        self.phase, self.reason = "Failed", "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        await self.agent.event(self.pod, "Normal", "DeadlineExceeded", self.message)
        await self._kill_all(float(self.spec.get("terminationGracePeriodSeconds", 30)))
        self.mark_dirty()

    async def _run_container(self, c: Obj, st: ContainerState, *, init: bool) -> ExitResult | None:
        """Start the container once and wait for it; None when the Pod went away first."""
        if self.terminating.is_set() or self.phase == "Failed":
            return None
        image = images.lookup(c.get("image", ""))
        backoff = 5.0
        while image is None:
            st.state = {"waiting": {"reason": "ErrImagePull",
                                    "message": f'failed to pull image "{c.get("image")}": not in the node '
                                               f"agent's image catalog (tests/localcluster/images.py)"}}
            self.mark_dirty()
            await self.agent.event(self.pod, "Warning", "Failed", f"Failed to pull image \"{c.get('image')}\"")
            if await self._wait_terminating(2.0):
                return None
            st.state = {"waiting": {"reason": "ImagePullBackOff",
                                    "message": f'Back-off pulling image "{c.get("image")}"'}}
            self.mark_dirty()
            if await self._wait_terminating(backoff):
                return None
            backoff = min(backoff * 2, BACKOFF_MAX)
        while True:
            try:
                launch = await self._launch_spec(c, st, image)
                break
            except ConfigError as e:
                st.state = {"waiting": {"reason": e.reason, "message": e.message}}
                self.mark_dirty()
                await self.agent.event(self.pod, "Warning", "Failed", f"Error: {e.message}")
                if await self._wait_terminating(2.0):
                    return None
        return await self._exec(c, st, launch, init=init)

    async def _launch_spec(self, c: Obj, st: ContainerState, image: images.ImageConfig) -> Obj:
        env = dict(image.env)
        env["HOSTNAME"] = self._hostname()
        env.update(await self.agent.service_env(self.ns, self.spec.get("enableServiceLinks", True)))
        env.update(await self._container_env(c))
        command = [expand_vars(a, env) for a in (c.get("command") or image.entrypoint)]
        args = c.get("args") if c.get("args") is not None else ([] if c.get("command") else list(image.cmd))
        argv = command + [expand_vars(a, env) for a in args or []]
        if not argv:
            raise ConfigError("CreateContainerError", "no command specified")
        psc = self.spec.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser", image.user[0] if image.user else 0))
        gid = csc.get("runAsGroup", psc.get("runAsGroup", image.user[1] if image.user else 0))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
            raise ConfigError("CreateContainerConfigError",
                              "container has runAsNonRoot and image will run as root")
        groups = [g for g in [psc.get("fsGroup"), *(psc.get("supplementalGroups") or [])] if g is not None]
        cdir = self.dir / "containers" / c["name"]
        run_dir = cdir / str(st.restart_count)
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        term = run_dir / "termination-log"
        term.touch()
        term.chmod(0o666)  # as the kubelet: any uid may write its termination message
        mounts = []
        for vm in c.get("volumeMounts") or []:
            src = self.volumes.get(vm["name"])
            if src is None:
                raise ConfigError("CreateContainerConfigError", f"volume {vm['name']!r} not found")
            sub = vm.get("subPath") or expand_vars(vm.get("subPathExpr") or "", env)
            if sub:
                if ".." in Path(sub).parts or sub.startswith("/"):
                    raise ConfigError("CreateContainerConfigError", f"invalid subPath {sub!r}")
                src = src / sub
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append({"source": str(src), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        taken = {m["target"] for m in mounts}
        for f in ("resolv.conf", "hosts", "hostname"):
            if f"/etc/{f}" not in taken:
                mounts.append({"source": str(self.dir / "etc" / f), "target": f"/etc/{f}"})
        mounts.append({"source": str(term),
                       "target": c.get("terminationMessagePath") or "/dev/termination-log"})
        # The "image" is the host's /, but the shim empties /tmp, /var/tmp and /run: a checkout
        # (and its virtualenv) under one of them must stay visible, read-only, on top of any
        # volume mounted there ("late"). A path inside another one needs no mount of its own.
        software = [p for p in images.SOFTWARE if any(p == d or p.startswith(d + "/") for d in EMPTIED)]
        for path in software:
            if not any(path.startswith(other + "/") for other in software) and path not in taken:
                mounts.append({"source": path, "target": path, "readOnly": True, "late": True})
        st.log_path = cdir / f"{st.restart_count}.log"
        return {
            "netns": self.netns,
            "hostname": self._hostname(),
            "rootfs": str(run_dir / "rootfs"),
            "upper": str(run_dir / "upper"),
            "work": str(run_dir / "work"),
            "scratch": str(run_dir / "scratch"),
            "mounts": mounts,
            "readOnlyRoot": bool(csc.get("readOnlyRootFilesystem")),
            "workingDir": c.get("workingDir") or image.working_dir or "/",
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "noNewPrivs": csc.get("allowPrivilegeEscalation") is False,
            "argv": argv,
            "env": env,
            "_termination": str(term),
            "_spec_path": str(run_dir / "spec.json"),
        }

    async def _container_env(self, c: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in src:
                    ref = src[key]
                    data = await self.agent.source_data(kind, self.ns, ref["name"])
                    if data is None and not ref.get("optional"):
                        raise ConfigError("CreateContainerConfigError", f'{kind.lower()} "{ref["name"]}" not found')
                    for k, v in (data or {}).items():
                        env[prefix + k] = v.decode(errors="replace")
        for item in c.get("env") or []:
            if "valueFrom" not in item:
                env[item["name"]] = expand_vars(item.get("value") or "", env)
                continue
            vf = item["valueFrom"]
            value: str | None = None
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if key in vf:
                    ref = vf[key]
                    data = await self.agent.source_data(kind, self.ns, ref["name"])
                    if data is None or ref["key"] not in data:
                        if ref.get("optional"):
                            break
                        what = f'{kind.lower()} "{ref["name"]}" not found' if data is None else \
                            f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}"
                        raise ConfigError("CreateContainerConfigError", what)
                    value = data[ref["key"]].decode(errors="replace")
            if "fieldRef" in vf:
                value = self.field_value(vf["fieldRef"]["fieldPath"])
            if "resourceFieldRef" in vf:
                ref = vf["resourceFieldRef"]
                target = next((x for x in self.spec.get("containers") or []
                               if x["name"] == ref.get("containerName")), c)
                value = resource_field_value(target, ref)
            if value is not None:
                env[item["name"]] = value
        return env

    async def _exec(self, c: Obj, st: ContainerState, launch: Obj, *, init: bool) -> ExitResult | None:
        spec_path = Path(launch.pop("_spec_path"))
        term = Path(launch.pop("_termination"))
        rfd, wfd = os.pipe()
        launch["errfd"] = wfd
        spec_path.write_text(json.dumps(launch))
        spec_path.chmod(0o600)
        assert st.log_path is not None
        logf = open(st.log_path, "ab")  # noqa: SIM115
        started_at = now()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", SHIM, str(spec_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=asyncio.subprocess.STDOUT,
                pass_fds=(wfd,), start_new_session=True,
            )
        finally:
            os.close(wfd)
            logf.close()
        err = (await asyncio.to_thread(_read_all, rfd)).decode(errors="replace").strip()
        if err:
            await proc.wait()
            res = ExitResult(128, "StartError", err, started_at, now())
            self._terminated(st, res)
            await self.agent.event(self.pod, "Warning", "Failed", f"Error: {err}")
            return res
        self.procs[c["name"]] = proc
        self.creds[c["name"]] = (int(launch["uid"]), int(launch["gid"]))
        st.pid = proc.pid
        if self.terminating.is_set():  # deleted while it was starting
            _signal_group(proc.pid, signal.SIGTERM)
        st.state = {"running": {"startedAt": started_at}}
        st.started = c.get("startupProbe") is None
        st.ready = False if c.get("readinessProbe") else not init
        self.mark_dirty()
        if not init:
            await self.agent.event(self.pod, "Normal", "Started", f"Started container {c['name']}")
        probes = [] if init else [asyncio.create_task(self._probes(c, st, proc))]
        code = await proc.wait()
        for p in probes:
            p.cancel()
        self.procs.pop(c["name"], None)
        st.pid = None
        exit_code = code if code >= 0 else 128 - code
        message = _read_head(term, TERMINATION_MESSAGE_MAX)
        if not message and exit_code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = _log_tail(st.log_path)
        res = ExitResult(exit_code, "Completed" if exit_code == 0 else "Error", message, started_at, now())
        self._terminated(st, res)
        return res

    def _terminated(self, st: ContainerState, res: ExitResult) -> None:
        st.state = {"terminated": res.terminated(f"dockyard://{st.name}-{st.restart_count}")}
        st.ready = False
        self.mark_dirty()

    async def _kill_all(self, grace: float) -> None:
        """preStop hooks, then SIGTERM, then SIGKILL when the grace period (which the hooks
        count against, as in the kubelet) is over."""
        deadline = time.monotonic() + grace
        containers = {c["name"]: c for c in self.spec.get("containers") or []}
        hooks = [self._pre_stop(containers[n]) for n in list(self.procs) if n in containers and grace > 0]
        if hooks:
            try:
                await asyncio.wait_for(asyncio.gather(*hooks), timeout=grace)
            except TimeoutError:
                pass
        procs = list(self.procs.values())
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)
        for p in procs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(p.wait(), timeout=remaining)
            except TimeoutError:
                _signal_group(p.pid, signal.SIGKILL)
                await p.wait()

    async def _pre_stop(self, c: Obj) -> None:
        hook = ((c.get("lifecycle") or {}).get("preStop")) or {}
        if "sleep" in hook:
            await asyncio.sleep(float(hook["sleep"].get("seconds") or 0))
        elif "exec" in hook or "httpGet" in hook:
            await self._probe_once(c, {**hook, "timeoutSeconds": 3600})

    # ------------------------------------------------------------ probes
    # Each probe gives (success, output); a failure's output goes into the Unhealthy event
    # ("Readiness probe failed: <output>"), as the kubelet reports it.

    async def _probes(self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process) -> None:
        startup, liveness, readiness = c.get("startupProbe"), c.get("livenessProbe"), c.get("readinessProbe")
        if startup:
            ok, output = await self._probe_until(c, startup, success=True)
            if not ok:
                await self._restart_for_probe(c, st, proc, "Startup", output)
                return
            st.started = True
            self.mark_dirty()
        tasks = []
        if readiness:
            tasks.append(asyncio.create_task(self._readiness_loop(c, st, readiness)))
        if liveness:
            tasks.append(asyncio.create_task(self._liveness_loop(c, st, proc, liveness)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _probe_until(self, c: Obj, probe: Obj, *, success: bool) -> tuple[bool, str]:
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        period = float(probe.get("periodSeconds") or 10)
        needed = int(probe.get("successThreshold") or 1) if success else int(probe.get("failureThreshold") or 3)
        failures_allowed = int(probe.get("failureThreshold") or 3)
        streak, failures = 0, 0
        while True:
            ok, output = await self._probe(c, probe)
            if ok == success:
                streak += 1
                if streak >= needed:
                    return True, output
            else:
                streak = 0
                failures += 1
                if success and failures >= failures_allowed:
                    return False, output
            await asyncio.sleep(period)

    async def _readiness_loop(self, c: Obj, st: ContainerState, probe: Obj) -> None:
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        period = float(probe.get("periodSeconds") or 10)
        ok_needed = int(probe.get("successThreshold") or 1)
        fail_needed = int(probe.get("failureThreshold") or 3)
        oks = fails = 0
        while True:
            ok, output = await self._probe(c, probe)
            oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
            if fails == fail_needed:  # once per run of failures
                await self.agent.event(self.pod, "Warning", "Unhealthy", _probe_failed("Readiness", output))
            if ok and oks >= ok_needed and not st.ready:
                st.ready = True
                self.mark_dirty()
            elif not ok and fails >= fail_needed and st.ready:
                st.ready = False
                self.mark_dirty()
            # Until first ready, probe faster than the period (the kubelet's prober also
            # reacts to a container start at once); after that, keep the declared period.
            await asyncio.sleep(period if st.ready else min(period, 0.5))

    async def _liveness_loop(self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, probe: Obj) -> None:
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        period = float(probe.get("periodSeconds") or 10)
        fail_needed = int(probe.get("failureThreshold") or 3)
        fails = 0
        while True:
            ok, output = await self._probe(c, probe)
            fails = 0 if ok else fails + 1
            if fails >= fail_needed:
                await self._restart_for_probe(c, st, proc, "Liveness", output)
                return
            await asyncio.sleep(period)

    async def _restart_for_probe(self, c: Obj, st: ContainerState, proc: asyncio.subprocess.Process, kind: str,
                                 output: str = "") -> None:
        await self.agent.event(self.pod, "Warning", "Unhealthy", _probe_failed(kind, output))
        _signal_group(proc.pid, signal.SIGTERM)
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)

    def _port(self, c: Obj, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"named port {port!r} not found")

    async def _probe_once(self, c: Obj, probe: Obj) -> bool:
        return (await self._probe(c, probe))[0]

    async def _probe(self, c: Obj, probe: Obj) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds") or 1)
        try:
            if "httpGet" in probe:
                h = probe["httpGet"]
                scheme = str(h.get("scheme", "HTTP")).lower()
                host = h.get("host") or self.pod_ip
                url = f"{scheme}://{host}:{self._port(c, h['port'])}{h.get('path', '/')}"
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                async with self.agent.http.get(url, headers=headers, ssl=False, allow_redirects=False,
                                               timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    ok = 200 <= r.status < 400
                    return ok, "" if ok else f"HTTP probe failed with statuscode: {r.status}"
            if "tcpSocket" in probe:
                t = probe["tcpSocket"]
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(t.get("host") or self.pod_ip, self._port(c, t["port"])), timeout
                )
                writer.close()
                return True, ""
            if "exec" in probe:
                return await self._exec_probe(c, probe["exec"]["command"], timeout)
        except TimeoutError:
            return False, f"timeout: probe did not answer within {timeout:g}s"
        except (OSError, aiohttp.ClientError, ValueError, KeyError) as e:
            return False, f"{type(e).__name__}: {e}"
        return False, "no handler in the probe"

    async def _exec_probe(self, c: Obj, command: list[str], timeout: float) -> tuple[bool, str]:
        """The command in the container: its mount, UTS and network namespaces, root and working
        directory, as the container's numeric uid and gid (util-linux 2.38's nsenter has no
        ``-S follow``; with it every exec probe failed before running its command). Supplementary
        groups are not kept (nsenter clears them), as in ``kubectl exec`` of a runtime without
        them. Its stdout and stderr together are the probe's output."""
        pid = self.procs[c["name"]].pid
        uid, gid = self.creds[c["name"]]
        proc = await asyncio.create_subprocess_exec(
            "nsenter", "-t", str(pid), "-m", "-u", "-n", "-r", "-w", "-S", str(uid), "-G", str(gid),
            "--", *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"command {command!r} timed out after {timeout:g}s"
        output = out[-PROBE_OUTPUT_MAX:].decode(errors="replace").strip()
        if proc.returncode == 0:
            return True, output
        return False, output or f"command {command!r} exited with {proc.returncode}"

    # ------------------------------------------------------------ instant mode

    async def _run_instant(self) -> None:
        policy = self.spec.get("restartPolicy", "Always")
        component = (self.pod["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
        results = await self.agent.instant_results(self.ns)
        message = results.get(component, "")
        t = now()
        for st in self.init_states.values():
            st.state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}
        self.initialized = True
        for st in self.states.values():
            if policy == "Always":
                st.state, st.ready, st.started = {"running": {"startedAt": t}}, True, True
            else:
                st.state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t,
                                           **({"message": message} if message else {})}}
        if policy != "Always":
            self.phase = "Succeeded"
        self.mark_dirty()
        await self.terminating.wait()

    # ------------------------------------------------------------ deletion

    async def terminate(self) -> None:
        self.terminating.set()

    async def _finish_deletion(self) -> None:
        """Graceful deletion as the kubelet does it: SIGTERM, the grace period, SIGKILL; then the
        final status and the delete with grace 0 that lets the apiserver drop the Pod."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        grace = float(grace if grace is not None else self.spec.get("terminationGracePeriodSeconds", 30))
        await self._kill_all(grace)
        if self.task is not None and not self.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=10)
            except TimeoutError:
                self.task.cancel()
        for st in self.states.values():
            if "terminated" not in st.state:
                t = now()
                st.state = {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": t, "finishedAt": t}}
            st.ready = False
        if self.phase not in ("Succeeded", "Failed") and self.spec.get("restartPolicy") != "Always":
            self.phase = "Failed"
        self.mark_dirty()
        await self._flush_status()
        try:
            await self.agent.api.request(
                "DELETE", pod_path(self.ns, self.name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )
        except ApiError as e:
            if e.status != 409:
                log.warning("final delete of %s/%s: %s", self.ns, self.name, e)
        await self.cleanup()

    async def cleanup(self) -> None:
        await self._kill_all(0.0)
        if self._writer is not None:
            self._writer.cancel()
        await self._release_network()

    # ------------------------------------------------------------ status

    def mark_dirty(self) -> None:
        self._status_dirty.set()

    async def _status_writer(self) -> None:
        while True:
            await self._status_dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one write
            self._status_dirty.clear()
            try:
                await self._flush_status()
            except PodGone:
                return
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("status of %s/%s: %s", self.ns, self.name, e)
                await asyncio.sleep(1)
                self._status_dirty.set()

    def _condition(self, ctype: str, ok: bool, reason: str | None = None) -> Obj:
        status = "True" if ok else "False"
        old = self._conditions.get(ctype)
        if old is None or old["status"] != status:
            old = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": now()}
            if reason:
                old["reason"] = reason
            self._conditions[ctype] = old
        return old

    def status(self) -> Obj:
        if self.phase not in ("Succeeded", "Failed"):
            running = any("running" in st.state for st in self.states.values())
            if self.initialized and running:
                self.phase = "Running"
        all_ready = self.initialized and all(st.ready for st in self.states.values()) and self.phase == "Running"
        conditions = [
            self._condition("PodReadyToStartContainers", self.sandbox_ready),
            self._condition("Initialized", self.initialized, None if self.initialized else "ContainersNotInitialized"),
            self._condition("Ready", all_ready, None if all_ready else "ContainersNotReady"),
            self._condition("ContainersReady", all_ready, None if all_ready else "ContainersNotReady"),
        ]
        for cond in (self.pod.get("status") or {}).get("conditions") or []:
            if cond["type"] not in self._conditions:
                conditions.append(cond)  # PodScheduled (scheduler), DisruptionTarget, ...
        st: Obj = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": self.agent.node_ip,
            "hostIPs": [{"ip": self.agent.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": [s.status() for s in self.states.values()],
            "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
        }
        if self.pod_ip:
            st["podIP"] = self.pod_ip
            st["podIPs"] = [{"ip": self.pod_ip}]
        if self.init_states:
            st["initContainerStatuses"] = [s.status() for s in self.init_states.values()]
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        return st

    async def _flush_status(self) -> None:
        status = self.status()
        if status == self._last_status:
            return
        try:
            got = await self.agent.api.request(
                "PATCH", pod_path(self.ns, self.name, "status"),
                {"metadata": {"uid": self.uid}, "status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as e:
            if e.status in (404, 409) or "UID" in e.message:
                raise PodGone from None
            raise
        if got is None:
            raise PodGone
        self._last_status = status


PROBE_OUTPUT_MAX = 10 * 1024  # the kubelet keeps at most 10 KiB of a probe's output


def _probe_failed(kind: str, output: str) -> str:
    return f"{kind} probe failed: {output}" if output else f"{kind} probe failed"


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while True:
            b = os.read(fd, 4096)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-FALLBACK_LOG_BYTES:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-FALLBACK_LOG_LINES:])


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def write_atomic_dir(path: Path, files: dict[str, tuple[bytes, int | None]], *, default_mode: int,
                     fs_group: int | None) -> None:
    """The kubelet's AtomicWriter layout: the data in a timestamped directory, ``..data``
    pointing at it, and each top-level name a symlink through ``..data``. Rewrites swap the
    ``..data`` link, so a reader never sees half an update."""
    path.mkdir(parents=True, exist_ok=True)
    stamp = f"..{dt.datetime.now(dt.UTC).strftime('%Y_%m_%d_%H_%M_%S.%f')}"
    target = path / stamp
    target.mkdir()
    for rel, (data, mode) in files.items():
        f = target / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(mode if mode is not None else default_mode)
        if fs_group is not None:
            os.chown(f, -1, int(fs_group))
    os.chmod(target, 0o755)
    tmp_link = path / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(stamp, tmp_link)
    old = os.readlink(path / "..data") if (path / "..data").is_symlink() else None
    os.rename(tmp_link, path / "..data")
    for top in {Path(rel).parts[0] for rel in files}:
        link = path / top
        if not link.is_symlink():
            os.symlink(f"..data/{top}", link)
    if old and old != stamp:
        shutil.rmtree(path / old, ignore_errors=True)


# ----------------------------------------------------------------------------------- the agent


class NodeAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = Api.from_kubeconfig(args.kubeconfig, user_agent="dockyard-node-agent/" + KUBELET_VERSION)
        self.admin = Api.from_kubeconfig(args.provisioner_kubeconfig) if args.provisioner_kubeconfig else None
        self.node_name: str = args.node_name
        self.node_ip: str = args.node_ip
        self.cluster_dns: str = args.cluster_dns
        self.cluster_domain: str = args.cluster_domain
        self.root = Path(args.root)
        self.port: int = args.port
        self.args = args
        self.workers: dict[str, PodWorker] = {}
        self.ipam: Ipam = Ipam("10.244.0.0/24")
        self.http: aiohttp.ClientSession
        self._instant_cache: dict[str, tuple[float, bool]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    async def run(self) -> None:
        await self.api.open()
        if self.admin is not None:
            await self.admin.open()
        self.http = aiohttp.ClientSession()
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._clean_leftovers)
        await self.register()
        cidr = await self.wait_pod_cidr()
        self.ipam = Ipam(cidr)
        self._tasks = [
            asyncio.create_task(self.lease_loop()),
            asyncio.create_task(self.heartbeat_loop()),
            asyncio.create_task(self.pod_loop()),
            asyncio.create_task(self.serve()),
        ]
        if self.admin is not None:
            from .provisioner import Provisioner

            self._tasks.append(asyncio.create_task(Provisioner(self.admin, self.node_name, self.root).run()))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for w in list(self.workers.values()):
            if w.task is not None:
                w.task.cancel()
            await w.cleanup()
        await self.http.close()
        await self.api.close()
        if self.admin is not None:
            await self.admin.close()

    def _clean_leftovers(self) -> None:
        """Pods of a previous agent run: their processes and namespaces are gone with it."""
        pods = self.root / "pods"
        if pods.exists():
            shutil.rmtree(pods, ignore_errors=True)
        network.delete_all_pod_networks()

    # ------------------------------------------------------------ node

    def _node_status(self) -> Obj:
        t = now()
        cpus = str(self.args.cpu or os.cpu_count() or 1)
        mem_kib = _meminfo_kib()
        capacity = {"cpu": cpus, "memory": f"{mem_kib}Ki", "pods": str(self.args.max_pods),
                    "ephemeral-storage": f"{_disk_kib(self.root)}Ki"}

        def cond(ctype: str, status: str, reason: str, message: str) -> Obj:
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": t, "lastTransitionTime": t}

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "dockyard node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": platform.release(), "osImage": "dockyard local node",
                "containerRuntimeVersion": "dockyard-shim://0.1", "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    async def register(self) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "dockyard-local",
            }},
        }
        try:
            await self.api.request("POST", "/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
        await self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()})

    async def wait_pod_cidr(self) -> str:
        while True:
            node = await self.api.get(f"/api/v1/nodes/{self.node_name}") or {}
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                return str(cidr)
            await asyncio.sleep(0.2)

    async def lease_loop(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        while True:
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                     "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_SECONDS,
                              "renewTime": now_micro()}}
            try:
                if await self.api.get(path) is None:
                    await self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
                else:
                    await self.api.merge_patch(path, {"spec": lease["spec"]})
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("lease: %s", e)
            await asyncio.sleep(10)

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()})
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("node status: %s", e)

    # ------------------------------------------------------------ pods

    async def pod_loop(self) -> None:
        query = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        async for etype, pod in self.api.informer("/api/v1/pods", query):
            if etype == "RESYNCED":
                live = {p["metadata"]["uid"] for p in pod["items"]}
                for uid in [u for u in self.workers if u not in live]:
                    await self._forget(uid)
                continue
            uid = pod["metadata"]["uid"]
            if etype == "DELETED":
                await self._forget(uid)
                continue
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                continue
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            if deleting and (terminal or etype == "SYNC"):
                await self._final_delete(pod)
                continue
            if terminal:
                continue
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
            if deleting:
                worker.update(pod)

    async def _forget(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.terminating.set()
            for task in (worker.task, worker._deleter):
                if task is not None and not task.done():
                    task.cancel()
            await worker.cleanup()

    async def _final_delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.api.request(
                "DELETE", pod_path(meta["namespace"], meta["name"]),
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": meta["uid"]}},
            )

    # ------------------------------------------------------------ what Pods read

    async def source_data(self, kind: str, ns: str, name: str) -> dict[str, bytes] | None:
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        obj = await self.api.get(f"/api/v1/namespaces/{quote(ns)}/{plural}/{quote(name)}")
        if obj is None:
            return None
        out: dict[str, bytes] = {}
        if kind == "Secret":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    async def service_account_token(self, pod: Obj, audience: str | None, seconds: int) -> str:
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        body: Obj = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": max(seconds, 600),
                              "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}
        if audience:
            body["spec"]["audiences"] = [audience]
        got = await self.api.request(
            "POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/serviceaccounts/{quote(sa)}/token", body
        )
        if got is None:
            raise ConfigError("FailedMount", f'serviceaccount "{sa}" not found')
        return str(got["status"]["token"])

    async def service_env(self, ns: str, links: bool) -> dict[str, str]:
        """KUBERNETES_SERVICE_* always, and the docker-link variables of every Service in
        the namespace when ``enableServiceLinks`` (the default)."""
        env: dict[str, str] = {}
        services = []
        kubernetes = await self.api.get("/api/v1/namespaces/default/services/kubernetes")
        if kubernetes:
            services.append(kubernetes)
        if links and ns != "default":
            lst = await self.api.get(f"/api/v1/namespaces/{quote(ns)}/services") or {}
            services += lst.get("items") or []
        for svc in services:
            ip = (svc.get("spec") or {}).get("clusterIP")
            ports = (svc.get("spec") or {}).get("ports") or []
            if not ip or ip == "None" or not ports:
                continue
            name = svc["metadata"]["name"].upper().replace("-", "_")
            if svc["metadata"]["name"] == "kubernetes" and svc["metadata"]["namespace"] == "default":
                name = "KUBERNETES"
            elif not links:
                continue
            first = ports[0]
            env[f"{name}_SERVICE_HOST"] = ip
            env[f"{name}_SERVICE_PORT"] = str(first["port"])
            env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
            for p in ports:
                proto = p.get("protocol", "TCP")
                if p.get("name"):
                    env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
                pre = f"{name}_PORT_{p['port']}_{proto}"
                env[pre] = f"{proto.lower()}://{ip}:{p['port']}"
                env[f"{pre}_PROTO"] = proto.lower()
                env[f"{pre}_PORT"] = str(p["port"])
                env[f"{pre}_ADDR"] = ip
        return env

    async def instant_mode(self, ns: str) -> bool:
        if self.admin is None:
            return False
        cached = self._instant_cache.get(ns)
        if cached and time.monotonic() - cached[0] < 2:
            return cached[1]
        obj = await self.admin.get(f"/api/v1/namespaces/{quote(ns)}") or {}
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(INSTANT_LABEL) == "instant"
        self._instant_cache[ns] = (time.monotonic(), value)
        return value

    async def instant_results(self, ns: str) -> dict[str, str]:
        if self.admin is None:
            return {}
        cm = await self.admin.get(f"/api/v1/namespaces/{quote(ns)}/configmaps/{INSTANT_RESULTS}") or {}
        return dict(cm.get("data") or {})

    async def event(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        t = now_micro()
        ev = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{os.urandom(6).hex()}", "namespace": meta["namespace"]},
            "eventTime": t, "reportingController": "kubelet", "reportingInstance": self.node_name,
            "action": reason, "reason": reason, "type": type_, "note": message[:1024],
            "regarding": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                          "namespace": meta["namespace"], "uid": meta["uid"]},
        }
        try:
            await self.api.request("POST", f"/apis/events.k8s.io/v1/namespaces/{quote(meta['namespace'])}/events",
                                   ev, retries=1)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.debug("event %s: %s", reason, e)

    # ------------------------------------------------------------ kubelet API

    async def serve(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._container_logs)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.args.client_ca)
        ctx.load_cert_chain(self.args.serving_cert, self.args.serving_key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.node_ip, self.port, ssl_context=ctx)
        await site.start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, cname = request.match_info["ns"], request.match_info["pod"], request.match_info["container"]
        worker = next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{name}" not found on node')
        st = worker.states.get(cname) or worker.init_states.get(cname)
        if st is None:
            raise web.HTTPNotFound(text=f'container "{cname}" not found in pod "{name}"')
        q = request.query
        restart = st.restart_count - 1 if q.get("previous") in ("true", "1") else st.restart_count
        path = worker.dir / "containers" / cname / f"{max(restart, 0)}.log"
        data = path.read_bytes() if path.exists() else b""
        if q.get("tailLines"):
            n = int(q["tailLines"])
            data = b"\n".join(data.splitlines()[-n:]) + (b"\n" if data.endswith(b"\n") and n else b"") if n else b""
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        if q.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(data)
        offset = path.stat().st_size if path.exists() else 0
        while "running" in st.state or "waiting" in st.state:
            await asyncio.sleep(0.2)
            if path.exists() and path.stat().st_size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                await resp.write(chunk)
        return resp


def _meminfo_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 8 * 1024 * 1024


def _disk_kib(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize // 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.localcluster.nodeagent", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", required=True, help="the node's credential (system:node:<name>)")
    p.add_argument("--provisioner-kubeconfig", default=None,
                   help="credential for the PV provisioner and namespace lookups (optional)")
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--cluster-dns", required=True)
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--root", required=True, help="directory for Pod sandboxes, volumes and logs")
    p.add_argument("--port", type=int, default=10250)
    p.add_argument("--serving-cert", required=True)
    p.add_argument("--serving-key", required=True)
    p.add_argument("--client-ca", required=True)
    p.add_argument("--cpu", type=int, default=0,
                   help="CPU capacity to advertise (default: this machine's)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(NodeAgent(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
