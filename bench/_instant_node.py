"""A second, tainted Node whose Pods "run" at once, for bench/rollout_analysis.py (not a benchmark).

    python bench/_instant_node.py --server URL --ca CA --cert CRT --key KEY --name NODE [--cpu 64]

The local cluster has one node (tests/localcluster/nodeagent.py): 2 CPUs and 110 Pods, shared
with whatever else runs on it. Fifty ModelDeployments need 100 serving Pods, and more while they
roll. This process registers one more Node, with the capacity asked for and the taint
``dockyard.dev/bench-node=<NODE>:NoSchedule``, so only Pods that tolerate it (the benchmark's
variants, through their own spec.variants[].tolerations and nodeSelector) are scheduled there
by the real kube-scheduler. It does what the node agent's instant mode does for serving Pods,
and no more: it renews the Node's Lease, reports the Node Ready, marks every Pod bound to it
Running and Ready at once (init containers Completed, a Pod IP from 198.18.0.0/15, the range
reserved for benchmarks: no process runs and nothing answers there), and finishes a deleted
Pod's graceful deletion at once. On SIGTERM it deletes its Lease and its Node.

Its own process, so its CPU shows apart from the node agent's and the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import signal
import ssl
from typing import Any

import aiohttp

TAINT_KEY = "dockyard.dev/bench-node"
NODE_IP = "192.0.2.10"  # TEST-NET-1: documentation only, never routed
POD_NET = ipaddress.ip_network("198.18.0.0/15")
LEASE_SECONDS = 40


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InstantNode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.server = args.server.rstrip("/")
        self.name = args.name
        self.cpu = args.cpu
        self.max_pods = args.max_pods
        self.ssl = ssl.create_default_context(cafile=args.ca)
        self.ssl.load_cert_chain(args.cert, args.key)
        self.http: aiohttp.ClientSession | None = None
        self.ips = (str(ip) for ip in POD_NET.hosts())
        self.done: dict[str, str] = {}  # uid -> what we last did ("ready" | "deleted")
        self.stopping = asyncio.Event()

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      allow: tuple[int, ...] = ()) -> dict[str, Any] | None:
        assert self.http is not None
        data = json.dumps(body) if body is not None else None
        async with self.http.request(method, self.server + path, data=data, ssl=self.ssl,
                                     headers={"Content-Type": content_type} if data else {}) as resp:
            out = await resp.json(content_type=None)
            if resp.status in allow:
                return None
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {str(out)[:300]}")
            return dict(out or {})

    def node_status(self) -> dict[str, Any]:
        t = now()
        capacity = {"cpu": str(self.cpu), "memory": "256Gi", "pods": str(self.max_pods), "ephemeral-storage": "1Ti"}

        def cond(ctype: str, status: str, reason: str) -> dict[str, str]:
            return {"type": ctype, "status": status, "reason": reason, "message": reason,
                    "lastHeartbeatTime": t, "lastTransitionTime": t}

        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                           cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                           cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                           cond("Ready", "True", "KubeletReady")],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                         "osImage": "dockyard bench instant node", "containerRuntimeVersion": "none://0",
                         "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }

    async def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": {
                    "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    TAINT_KEY: "true"}},
                "spec": {"taints": [{"key": TAINT_KEY, "value": self.name, "effect": "NoSchedule"}]}}
        await self.request("POST", "/api/v1/nodes", node, allow=(409,))
        await self.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": self.node_status()},
                           content_type="application/merge-patch+json")

    async def lease_loop(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        while True:
            spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
            with contextlib.suppress(aiohttp.ClientError, RuntimeError, TimeoutError):
                if await self.request("GET", path, allow=(404,)) is None:
                    await self.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                       {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                        "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                                        "spec": spec})
                else:
                    await self.request("PATCH", path, {"spec": spec}, content_type="application/merge-patch+json")
            await asyncio.sleep(10)

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            with contextlib.suppress(aiohttp.ClientError, RuntimeError, TimeoutError):
                await self.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": self.node_status()},
                                   content_type="application/merge-patch+json")

    def pod_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        t = now()
        spec, old = pod["spec"], pod.get("status") or {}
        ip = next(self.ips)
        conditions = [{"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": t}
                      for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]
        conditions += [c for c in old.get("conditions") or [] if c["type"] not in
                       ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]

        def container(c: dict[str, Any], init: bool) -> dict[str, Any]:
            state = ({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}
                     if init else {"running": {"startedAt": t}})
            return {"name": c["name"], "image": c["image"], "imageID": f"none://{c['image']}", "ready": not init,
                    "started": not init, "restartCount": 0, "state": state, "lastState": {},
                    "containerID": f"none://{pod['metadata']['uid']}/{c['name']}"}

        status: dict[str, Any] = {
            "phase": "Running", "conditions": conditions, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": t, "qosClass": old.get("qosClass", "BestEffort"),
            "containerStatuses": [container(c, False) for c in spec["containers"]],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [container(c, True) for c in spec["initContainers"]]
        return status

    async def handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid, path = meta["uid"], f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            if meta.get("deletionTimestamp"):
                if self.done.get(uid) != "deleted":
                    self.done[uid] = "deleted"
                    await self.request("DELETE", path, {"apiVersion": "v1", "kind": "DeleteOptions",
                                                        "gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                                       allow=(404, 409))
            elif self.done.get(uid) is None and (pod.get("status") or {}).get("phase") != "Running":
                self.done[uid] = "ready"
                await self.request("PATCH", f"{path}/status", {"metadata": {"uid": uid}, "status": self.pod_status(pod)},
                                   content_type="application/merge-patch+json", allow=(404, 409))
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            self.done.pop(uid, None)
            print(f"pod {meta['namespace']}/{meta['name']}: {exc}", flush=True)

    async def pod_loop(self) -> None:
        assert self.http is not None
        selector = f"spec.nodeName={self.name}"
        while True:
            try:
                listed = await self.request("GET", f"/api/v1/pods?fieldSelector={selector}")
                assert listed is not None
                for pod in listed.get("items") or []:
                    await self.handle(pod)
                rv = listed["metadata"]["resourceVersion"]
                url = (f"{self.server}/api/v1/pods?fieldSelector={selector}&watch=1&resourceVersion={rv}"
                       "&allowWatchBookmarks=true")
                async with self.http.get(url, ssl=self.ssl, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break  # 410 Gone: list again
                        if event["type"] in ("ADDED", "MODIFIED"):
                            await self.handle(event["object"])
                        elif event["type"] == "DELETED":
                            self.done.pop(event["object"]["metadata"]["uid"], None)
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                print(f"pod watch: {exc}", flush=True)
                await asyncio.sleep(1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        async with aiohttp.ClientSession() as self.http:
            await self.register()
            tasks = [asyncio.create_task(t) for t in (self.lease_loop(), self.heartbeat_loop(), self.pod_loop())]
            print(f"node {self.name} registered", flush=True)
            await self.stopping.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(aiohttp.ClientError, RuntimeError, TimeoutError):
                await self.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}",
                                   allow=(404,))
                await self.request("DELETE", f"/api/v1/nodes/{self.name}", allow=(404,))
            print(f"node {self.name} deleted", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--cpu", type=int, default=64)
    p.add_argument("--max-pods", type=int, default=1000)
    asyncio.run(InstantNode(p.parse_args()).run())


if __name__ == "__main__":
    main()
