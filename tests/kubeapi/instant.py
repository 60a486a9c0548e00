"""Instant Jobs and Deployments on the API emulator, for the benchmarks' ``--target emulator``.

The emulator has no controllers and no kubelet. This thread plays both in the crudest way
that still talks to the API the way they do: for each new Job in the namespace it creates one
Pod, reports it terminated with the exit code and termination message ``result(job)`` gives,
and marks the Job Complete (or Failed: one attempt, no retries); for each Deployment it
reports every replica ready and available at the current generation. Nothing runs.

Everything else (running Pods, retries, probes, Services, DNS) is the real control plane's
job (``tests/localcluster``), which the tests and the default benchmark target use.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Obj = dict[str, Any]
THREAD_NAME = "local-executor"  # the benchmarks account this thread's CPU under that name
MERGE = "application/merge-patch+json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InstantKubelet:
    def __init__(self, server: str, namespace: str, result: Callable[[Obj], tuple[int, str]]) -> None:
        self.server = server.rstrip("/")
        self.namespace = namespace
        self.result = result
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._synced = threading.Event()
        self._error: BaseException | None = None
        self._jobs_seen: set[str] = set()

    def start(self, timeout: float = 30.0) -> InstantKubelet:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=THREAD_NAME, daemon=True)
        self._thread.start()
        if not self._synced.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"instant kubelet did not sync with {self.server}: {self._error}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        synced = {"jobs": asyncio.Event(), "deployments": asyncio.Event()}
        try:
            async with aiohttp.ClientSession() as s:
                watches = [
                    asyncio.create_task(self._watch(s, "/apis/batch/v1", "jobs", self._job, synced["jobs"])),
                    asyncio.create_task(self._watch(s, "/apis/apps/v1", "deployments", self._deployment,
                                                    synced["deployments"])),
                ]
                await asyncio.gather(*(e.wait() for e in synced.values()))
                self._synced.set()
                await self._stop.wait()
                for task in watches:
                    task.cancel()
                await asyncio.gather(*watches, return_exceptions=True)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._synced.set()

    async def _watch(self, s: aiohttp.ClientSession, prefix: str, plural: str,
                     handle: Callable[[aiohttp.ClientSession, Obj], Awaitable[None]], synced: asyncio.Event) -> None:
        url = f"{self.server}{prefix}/namespaces/{self.namespace}/{plural}"
        while True:
            async with s.get(url) as resp:
                resp.raise_for_status()
                listed = await resp.json()
            for item in listed.get("items") or []:
                await handle(s, item)
            synced.set()
            rv = listed["metadata"]["resourceVersion"]
            async with s.get(url, params={"watch": "1", "resourceVersion": rv},
                             timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                async for line in resp.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # 410 Gone: list again
                    if event["type"] in ("ADDED", "MODIFIED"):
                        await handle(s, event["object"])

    async def _request(self, s: aiohttp.ClientSession, method: str, path: str, body: Obj,
                       content_type: str = "application/json") -> Obj:
        async with s.request(method, f"{self.server}{path}", data=json.dumps(body),
                             headers={"Content-Type": content_type}) as resp:
            out: Obj = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {str(out)[:300]}")
            return out

    async def _job(self, s: aiohttp.ClientSession, job: Obj) -> None:
        meta = job["metadata"]
        if meta["uid"] in self._jobs_seen or (job.get("status") or {}).get("conditions"):
            return
        self._jobs_seen.add(meta["uid"])
        exit_code, message = self.result(job)
        ns, name, uid, started = meta["namespace"], meta["name"], meta["uid"], _now()
        template = (job.get("spec") or {}).get("template") or {}
        labels = {**((template.get("metadata") or {}).get("labels") or {}),
                  "job-name": name, "controller-uid": uid,
                  "batch.kubernetes.io/job-name": name, "batch.kubernetes.io/controller-uid": uid}
        pod = await self._request(s, "POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{os.urandom(3).hex()}", "namespace": ns, "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {**(template.get("spec") or {}), "restartPolicy": "Never"},
        })
        container = ((template.get("spec") or {}).get("containers") or [{"name": "main"}])[0]["name"]
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "message": message, "startedAt": started, "finishedAt": _now()}
        await self._request(s, "PATCH", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/status", {
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                       "containerStatuses": [{"name": container, "ready": False, "restartCount": 0,
                                              "state": {"terminated": terminated}}]},
        }, MERGE)
        now = _now()
        if exit_code == 0:
            status: Obj = {"succeeded": 1, "completionTime": now,
                           "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]}
        else:
            status = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": now,
                                                   "reason": "BackoffLimitExceeded",
                                                   "message": "Job has reached the specified backoff limit"}]}
        await self._request(s, "PATCH", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}/status",
                            {"status": {"startTime": started, **status}}, MERGE)

    async def _deployment(self, s: aiohttp.ClientSession, deployment: Obj) -> None:
        meta, st = deployment["metadata"], deployment.get("status") or {}
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        if st.get("observedGeneration") == meta.get("generation") and st.get("readyReplicas", 0) == replicas:
            return
        await self._request(s, "PATCH", f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/"
                                        f"{meta['name']}/status", {"status": {
            "observedGeneration": meta.get("generation"), "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                            "lastTransitionTime": _now()}]}}, MERGE)
