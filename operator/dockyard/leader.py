"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica watches and keeps its cache warm; only the holder of the Lease reconciles.
kopf's peering would pause only kopf's own watch streams, not our workers and timers, so it
could not keep a second replica out. Expiry is judged by when *this* process last saw the
holder's record change (no comparison of clocks across machines). A leader that cannot
renew within ``renew_deadline`` has lost: the operator stops, and its Pod restarts as a
follower. On a clean shutdown the Lease is released so that a follower takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from .kube import ApiError, KubeClient

log = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0  # how long followers wait on a silent leader
    renew_deadline: float = 10.0  # the leader gives up if it could not renew for this long
    retry_seconds: float = 2.0  # between attempts to acquire or renew


def _micro_time(at: dt.datetime | None = None) -> str:
    return (at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: KubeClient, cfg: LeaseConfig):
        self.kube = kube
        self.cfg = cfg
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self._observed: tuple[Any, ...] | None = None  # the holder's record as last seen
        self._observed_at = 0.0  # monotonic time it was first seen

    async def run(self) -> None:
        """Acquire (waiting as long as another holder renews), then renew until lost."""
        while not await self._try("acquire"):
            await asyncio.sleep(self.cfg.retry_seconds)
        log.info("leader election: %s holds Lease %s/%s", self.cfg.identity, self.cfg.namespace, self.cfg.name)
        self.leading.set()
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.cfg.retry_seconds)
            if await self._try("renew"):
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self.cfg.renew_deadline:
                log.error("leader election: could not renew Lease %s/%s for %.0fs; stepping down",
                          self.cfg.namespace, self.cfg.name, self.cfg.renew_deadline)
                self.leading.clear()
                self.lost.set()
                return

    async def release(self) -> None:
        """On shutdown: hand the Lease back (only if it is still ours)."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = await self.kube.get(LEASE_API, "Lease", self.cfg.namespace, self.cfg.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.cfg.identity:
                await self.kube.merge_patch(LEASE_API, "Lease", self.cfg.namespace, self.cfg.name, {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()},
                })
        except ApiError as exc:
            log.warning("leader election: could not release the Lease: %s", exc)

    async def _try(self, what: str) -> bool:
        try:
            return await self._acquire_or_renew()
        except ApiError as exc:
            if exc.status != 409:  # 409: someone else wrote first; judged again next time
                log.warning("leader election: %s failed: %s", what, exc)
            return False
        except Exception as exc:  # connection errors: the renew deadline decides
            log.warning("leader election: %s failed: %s", what, exc)
            return False

    async def _acquire_or_renew(self) -> bool:
        cfg = self.cfg
        now = _micro_time()
        spec = {"holderIdentity": cfg.identity, "leaseDurationSeconds": int(cfg.lease_seconds), "renewTime": now}
        lease = await self.kube.get(LEASE_API, "Lease", cfg.namespace, cfg.name)
        if lease is None:
            await self.kube.create({
                "apiVersion": LEASE_API, "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {**spec, "acquireTime": now, "leaseTransitions": 0},
            })
            return True
        held = lease.get("spec") or {}
        holder = held.get("holderIdentity")
        if holder and holder != cfg.identity:
            record = (holder, held.get("renewTime"), held.get("leaseDurationSeconds"))
            if record != self._observed:
                self._observed, self._observed_at = record, time.monotonic()
            if time.monotonic() - self._observed_at < float(held.get("leaseDurationSeconds") or cfg.lease_seconds):
                return False  # the holder renewed within its lease, as far as we have seen
        if holder != cfg.identity:
            spec.update(acquireTime=now, leaseTransitions=int(held.get("leaseTransitions") or 0) + 1)
        await self.kube.merge_patch(LEASE_API, "Lease", cfg.namespace, cfg.name, {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": spec})
        return True
