"""Benchmark of async Kubernetes clients (not a test): requests/s and CPU per request.

    .venv/bin/python bench/bench_kube_clients.py [--rounds 200] [--concurrency 4] [--repeat 3]

Chooses the client under ``dockyard.kube`` (issue 11). Each client runs the same fixed mix
against the running local control plane (``hack/controlplane.sh up``; admin kubeconfig, TLS
client certificate), in a scratch namespace: one round is

    create ConfigMap, get it, merge-patch it, list the namespace's ConfigMaps by label, delete it

(5 requests), ``--rounds`` rounds spread over ``--concurrency`` tasks. Clients:

* ``dockyard-aiohttp``: the hand-written aiohttp client this replaced (kept here, in
  ``_legacy_kube.py``, only to be measured);
* ``dockyard.kube``: the replacement, on kubernetes_asyncio (discovery, pagination, token
  refresh on top; same five calls);
* ``kubernetes_asyncio``: the generated client's ``ApiClient.call_api`` on REST paths, raw
  JSON (``_preload_content=False``), as a generic-dict client would use it;
* ``lightkube``: ``AsyncClient`` with a generic (dict) resource, as dockyard.kube uses it;
* ``kr8s``: ``kr8s.asyncio`` objects (``ConfigMap.create/get/patch/delete``, ``api.get``).

Reported per client: wall requests/s, and process CPU seconds per request
(``time.process_time``; this process runs only the client under test, the apiserver is
another process). Set-up (loading the kubeconfig, the first connection) is not timed. The
clients run interleaved ``--repeat`` times so that machine load hits each alike; the best
repeat is reported (the median is printed too). Takes ~40 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

NS_PREFIX = "bench-kube-clients-"
LABEL = "bench.dockyard.dev/mix"


def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG") or "/tmp/dockyard-cluster/admin.kubeconfig"
    if not Path(path).exists():
        sys.exit(f"no kubeconfig at {path}: start the control plane (bash hack/controlplane.sh up)")
    os.environ["KUBECONFIG"] = path
    return path


def configmap(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "yes"}},
            "data": {"a": "1"}}


class Mix:
    """One client's implementation of the five calls. ``setup`` is not timed."""

    name = "?"

    async def setup(self, ns: str) -> None: ...
    async def close(self) -> None: ...
    async def create(self, ns: str, name: str) -> None: ...
    async def get(self, ns: str, name: str) -> None: ...
    async def patch(self, ns: str, name: str, i: int) -> None: ...
    async def list(self, ns: str) -> None: ...
    async def delete(self, ns: str, name: str) -> None: ...


class Legacy(Mix):
    name = "dockyard-aiohttp (old)"

    async def setup(self, ns: str) -> None:
        from bench._legacy_kube import KubeClient

        self.c = KubeClient.from_environment()
        await self.c.list("v1", "ConfigMap", ns)

    async def close(self) -> None:
        await self.c.close()

    async def create(self, ns: str, name: str) -> None:
        await self.c.create(configmap(ns, name))

    async def get(self, ns: str, name: str) -> None:
        assert await self.c.get("v1", "ConfigMap", ns, name) is not None

    async def patch(self, ns: str, name: str, i: int) -> None:
        await self.c.merge_patch("v1", "ConfigMap", ns, name, {"data": {"b": str(i)}})

    async def list(self, ns: str) -> None:
        await self.c.list("v1", "ConfigMap", ns, label_selector=f"{LABEL}=yes")

    async def delete(self, ns: str, name: str) -> None:
        await self.c.delete("v1", "ConfigMap", ns, name)


class Dockyard(Legacy):
    name = "dockyard.kube (new)"

    async def setup(self, ns: str) -> None:
        from dockyard.kube import KubeClient

        self.c = KubeClient.from_environment()
        await self.c.list("v1", "ConfigMap", ns)


class KubernetesAsyncio(Mix):
    name = "kubernetes_asyncio"

    async def setup(self, ns: str) -> None:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(client_configuration=cfg)
        self.api = client.ApiClient(cfg)
        await self._call("GET", f"/api/v1/namespaces/{ns}/configmaps")

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, method: str, path: str, body: Any = None, query: list[Any] | None = None,
                    content_type: str = "application/json") -> Any:
        resp = await self.api.call_api(
            path, method, query_params=query or [], body=body, auth_settings=["BearerToken"],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            _preload_content=False,
        )
        data = await resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
        return json.loads(data)

    async def create(self, ns: str, name: str) -> None:
        await self._call("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap(ns, name),
                         [("fieldManager", "dockyard")])

    async def get(self, ns: str, name: str) -> None:
        await self._call("GET", f"/api/v1/namespaces/{ns}/configmaps/{name}")

    async def patch(self, ns: str, name: str, i: int) -> None:
        await self._call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{name}", {"data": {"b": str(i)}},
                         [("fieldManager", "dockyard")], "application/merge-patch+json")

    async def list(self, ns: str) -> None:
        await self._call("GET", f"/api/v1/namespaces/{ns}/configmaps", query=[("labelSelector", f"{LABEL}=yes")])

    async def delete(self, ns: str, name: str) -> None:
        await self._call("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}",
                         {"propagationPolicy": "Background"})


class Lightkube(Mix):
    name = "lightkube"

    async def setup(self, ns: str) -> None:
        from lightkube import AsyncClient
        from lightkube.generic_resource import create_namespaced_resource

        self.res = create_namespaced_resource("", "v1", "ConfigMap", "configmaps")
        self.c = AsyncClient(field_manager="dockyard")
        [x async for x in self.c.list(self.res, namespace=ns)]

    async def close(self) -> None:
        await self.c.close()

    async def create(self, ns: str, name: str) -> None:
        await self.c.create(self.res(configmap(ns, name)))

    async def get(self, ns: str, name: str) -> None:
        await self.c.get(self.res, name, namespace=ns)

    async def patch(self, ns: str, name: str, i: int) -> None:
        from lightkube.types import PatchType

        await self.c.patch(self.res, name, {"data": {"b": str(i)}}, namespace=ns, patch_type=PatchType.MERGE)

    async def list(self, ns: str) -> None:
        [x async for x in self.c.list(self.res, namespace=ns, labels={LABEL: "yes"})]

    async def delete(self, ns: str, name: str) -> None:
        await self.c.delete(self.res, name, namespace=ns)


class Kr8s(Mix):
    name = "kr8s"

    async def setup(self, ns: str) -> None:
        import kr8s.asyncio
        from kr8s.asyncio.objects import ConfigMap

        self.cls = ConfigMap
        self.api = await kr8s.asyncio.api()
        [x async for x in self.api.get("configmaps", namespace=ns)]

    async def create(self, ns: str, name: str) -> None:
        await self.cls(configmap(ns, name), api=self.api).create()

    async def get(self, ns: str, name: str) -> None:
        await self.cls.get(name, namespace=ns, api=self.api)

    async def patch(self, ns: str, name: str, i: int) -> None:
        await self.cls(configmap(ns, name), api=self.api).patch({"data": {"b": str(i)}}, type="merge")

    async def list(self, ns: str) -> None:
        [x async for x in self.api.get("configmaps", namespace=ns, label_selector=f"{LABEL}=yes")]

    async def delete(self, ns: str, name: str) -> None:
        await self.cls(configmap(ns, name), api=self.api).delete()


CLIENTS: dict[str, Callable[[], Mix]] = {
    "old": Legacy, "new": Dockyard, "kubernetes_asyncio": KubernetesAsyncio, "lightkube": Lightkube, "kr8s": Kr8s,
}


async def run_mix(mix: Mix, ns: str, rounds: int, concurrency: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, requests) for ``rounds`` rounds of the mix."""
    tag = uuid.uuid4().hex[:6]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(rounds):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            name = f"cm-{tag}-{i}"
            await mix.create(ns, name)
            await mix.get(ns, name)
            await mix.patch(ns, name, i)
            await mix.list(ns)
            await mix.delete(ns, name)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, time.process_time() - cpu0, rounds * 5


async def namespace(action: str, ns: str) -> None:
    from bench._legacy_kube import KubeClient

    c = KubeClient.from_environment()
    try:
        if action == "create":
            await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        else:
            await c.delete("v1", "Namespace", None, ns)
    finally:
        await c.close()


async def main_async(args: argparse.Namespace) -> int:
    names = args.clients.split(",")
    ns = NS_PREFIX + uuid.uuid4().hex[:6]
    await namespace("create", ns)
    results: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
    try:
        mixes = {n: CLIENTS[n]() for n in names}
        for m in mixes.values():
            await m.setup(ns)
        for m in mixes.values():  # warm-up: connections, lazy imports, caches
            await run_mix(m, ns, max(2, args.concurrency), args.concurrency)
        for _ in range(args.repeat):
            for n, m in mixes.items():
                results[n].append(await run_mix(m, ns, args.rounds, args.concurrency))
        for m in mixes.values():
            await m.close()
    finally:
        await namespace("delete", ns)

    print(f"{'client':<26} {'req/s (best)':>12} {'req/s (median)':>15} {'CPU ms/req (best)':>18} "
          f"{'CPU ms/req (median)':>20}")
    for n in names:
        rps = [req / wall for wall, _, req in results[n]]
        cpu = [1000 * c / req for _, c, req in results[n]]
        print(f"{mixes[n].name:<26} {max(rps):>12.0f} {statistics.median(rps):>15.0f} {min(cpu):>18.2f} "
              f"{statistics.median(cpu):>20.2f}")
    return 0


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("aiohttp", "kubernetes_asyncio", "lightkube", "httpx", "kr8s"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=absent")
    return " ".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200, help="rounds of the 5-request mix per client per repeat")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent tasks per client")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats; best and median reported")
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated subset of {','.join(CLIENTS)}")
    args = p.parse_args()
    kc = kubeconfig()
    print(f"== bench_kube_clients  {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    print(f"parameters: rounds={args.rounds} concurrency={args.concurrency} repeat={args.repeat} "
          f"mix=create,get,merge-patch,list(label),delete (ConfigMap) kubeconfig={kc}")
    print(f"machine: os.cpu_count()={os.cpu_count()} loadavg(1/5/15m)="
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} python={platform.python_version()} "
          f"{platform.machine()}")
    print(f"versions: {versions()}")
    sys.stdout.flush()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
