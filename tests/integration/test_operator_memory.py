"""Operator memory check: 1000 watched objects, 3 rounds of updates, RSS must not keep growing.

The operator (a real process) watches 1000 TrainingRuns whose Dataset does not exist, so they
stay ``WaitingForData``: cheap for the API and MLflow, but every one is cached, reconciled and
status-patched like any other. Each round changes ``spec.backoffLimit`` (mutable) on all of
them; the generation moves, so the operator reconciles each object and patches its status
(``observedGeneration``), and sees the watch events of its own writes.

RSS (VmRSS from /proc/<pid>/status) is sampled once the operator is quiet after creation and
after each round: quiet = every object's status reflects the round, the operator's
reconcile counter (Prometheus) has stopped moving, and its work queue (liveness probe) is
empty.

Threshold: the growth from round 1 to round 3 must stay below ``LEAK_FRACTION`` (half) of what
leaking *one copy of each object per round* would cost, i.e. 2 rounds x 1000 objects x the
in-memory size of one TrainingRun body (measured here with the same JSON parsing the
operator does), and never below ``FLOOR_BYTES`` (6 MiB) of allocator noise. Round 1 is the
baseline, not creation: the first update round warms up the paths that creation did not use
(kopf per-object workers, patch buffers), which is a one-time step. A leak that retains
per-update state grows linearly and fails; bounded caches and allocator slack do not.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.integration.fault_support import training_run
from tests.plugins.kube import KubeEnv
from tests.plugins.operator import OperatorFactory, OperatorProcess

pytestmark = pytest.mark.integration

N = 1000
ROUNDS = 3
CONCURRENCY = 32
LEAK_FRACTION = 0.5
FLOOR_BYTES = 6 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes a parsed JSON value takes in CPython (containers and their contents)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def bulk(kube: KubeEnv, requests: list[tuple[str, str, Any, str]]) -> None:
    """Send (method, path, body, content type) requests concurrently; all must succeed."""
    conf = kube.api.configuration
    headers = {"Accept": "application/json"}
    token = conf.api_key.get("authorization") or conf.api_key.get("BearerToken")
    if token:
        prefix = conf.api_key_prefix.get("authorization", "")
        headers["Authorization"] = f"{prefix} {token}".strip()
    tls: Any = False
    if conf.host.startswith("https://"):  # a real cluster (kind: client certificates)
        tls = ssl.create_default_context(cafile=conf.ssl_ca_cert)
        if not conf.verify_ssl:
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        if conf.cert_file:
            tls.load_cert_chain(conf.cert_file, conf.key_file)

    async def main() -> list[str]:
        sem = asyncio.Semaphore(CONCURRENCY)
        errors: list[str] = []
        async with aiohttp.ClientSession(headers=headers) as session:

            async def one(method: str, path: str, body: Any, ctype: str) -> None:
                async with sem:
                    async with session.request(
                        method,
                        conf.host + path,
                        data=json.dumps(body),
                        headers={"Content-Type": ctype},
                        ssl=tls,
                    ) as resp:
                        if resp.status >= 300:
                            errors.append(f"{method} {path}: {resp.status} {(await resp.text())[:300]}")

            await asyncio.gather(*(one(*r) for r in requests))
        return errors

    errors = asyncio.run(main())
    assert not errors, errors[:5]


def reconciles(operator: OperatorProcess) -> float:
    text = operator.metrics()
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^dockyard_reconcile_total\{kind="TrainingRun",result="\w+"\} (\S+)$', text, re.M
        )
    )


def status_patches(kube: KubeEnv) -> int:
    return kube.counters.get("patch", "trainingruns/status") if kube.counters is not None else 0


def wait_quiet(
    kube: KubeEnv, operator: OperatorProcess, done: Callable[[list[dict]], bool], patches_before: int
) -> None:
    """Until the round is applied (``done(trainingruns)``), the operator's reconcile counter holds
    still across two polls and its work queue is empty.

    Where requests are counted, the round's N status patches (one per object) are awaited first,
    so the 1000-object list (expensive for both sides) is fetched about once instead of polled."""
    if kube.counters is not None:
        kube.wait_for(
            lambda: status_patches(kube) - patches_before >= N,
            timeout=180,
            interval=0.2,
            message=f"{N} status patches",
        )
    kube.wait_for(lambda: done(kube.list("TrainingRun")), timeout=180, interval=2.0, message="round applied")
    last = {"n": -1.0}

    def settled() -> bool:
        n = reconciles(operator)
        still, last["n"] = n == last["n"], n
        return still and operator.liveness().get("queue") == 0

    kube.wait_for(settled, timeout=120, interval=0.5, message="operator quiet")


def test_operator_memory_flat_over_update_rounds(kube: KubeEnv, operator_factory: OperatorFactory) -> None:
    ns = kube.namespace
    base = kube.cluster.path("TrainingRun", ns)
    operator = operator_factory().start()
    assert operator.proc is not None
    pid = operator.proc.pid

    def doc(i: int) -> dict[str, Any]:
        tr = training_run(f"mem-{i:04d}", "memory-check")
        tr["metadata"]["namespace"] = ns
        tr["spec"]["datasetRef"] = {"name": "absent"}
        return tr

    started = time.monotonic()
    before = status_patches(kube)
    bulk(kube, [("POST", base, doc(i), "application/json") for i in range(N)])
    created_in = time.monotonic() - started

    def all_waiting(trs: list[dict]) -> bool:
        return len(trs) == N and all((t.get("status") or {}).get("phase") == "WaitingForData" for t in trs)

    wait_quiet(kube, operator, all_waiting, before)
    samples = [("created", rss_bytes(pid), time.monotonic() - started)]

    for r in range(1, ROUNDS + 1):
        patch = {"spec": {"backoffLimit": r + 1}}
        before = status_patches(kube)
        bulk(
            kube, [("PATCH", f"{base}/mem-{i:04d}", patch, "application/merge-patch+json") for i in range(N)]
        )

        def applied(trs: list[dict], r: int = r) -> bool:
            return len(trs) == N and all(
                t["spec"].get("backoffLimit") == r + 1
                and (t.get("status") or {}).get("observedGeneration") == t["metadata"]["generation"]
                for t in trs
            )

        wait_quiet(kube, operator, applied, before)
        samples.append((f"round {r}", rss_bytes(pid), time.monotonic() - started))

    one = kube.get("TrainingRun", "mem-0000")
    per_object = deep_size(json.loads(json.dumps(one)))
    leak_bytes = 2 * N * per_object  # one retained copy per object per round, rounds 2 and 3
    threshold = max(LEAK_FRACTION * leak_bytes, FLOOR_BYTES)
    growth = samples[-1][1] - samples[1][1]

    mib = 1024 * 1024
    print(f"\n{N} TrainingRuns created in {created_in:.1f}s; one body ~{per_object / 1024:.1f} KiB in memory")
    for label, rss, at in samples:
        print(f"  {label:>8}: RSS {rss / mib:7.1f} MiB  (t={at:5.1f}s)")
    print(
        f"  growth round 1 -> {ROUNDS}: {growth / mib:+.1f} MiB; threshold {threshold / mib:.1f} MiB "
        f"(leaking one copy per object per round would be {leak_bytes / mib:.1f} MiB)"
    )
    assert operator.alive()
    assert growth < threshold, samples
