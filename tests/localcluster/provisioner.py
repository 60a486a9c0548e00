"""A dynamic PersistentVolume provisioner for the local StorageClass, in the manner of
rancher's local-path-provisioner: a claim of class ``local`` that the scheduler has placed on
this node (``volume.kubernetes.io/selected-node``) gets a hostPath PersistentVolume under
the agent's root; the real PV controller binds them. A Released volume of ours is deleted
with its directory (reclaim policy Delete).

It runs with the ``system:persistent-volume-provisioner`` ClusterRole (bound by the control
plane launcher), not with the node's identity, which may not create PersistentVolumes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from .apiclient import Api, ApiError

log = logging.getLogger("dockyard.provisioner")

PROVISIONER = "dockyard.dev/local-node-agent"
STORAGE_CLASS = "local"
Obj = dict[str, Any]


class Provisioner:
    def __init__(self, api: Api, node: str, root: Path) -> None:
        self.api = api
        self.node = node
        self.root = root / "volumes"

    async def run(self) -> None:
        await asyncio.gather(self._claims(), self._volumes())

    async def _claims(self) -> None:
        async for etype, pvc in self.api.informer("/api/v1/persistentvolumeclaims"):
            if etype in ("SYNC", "ADDED", "MODIFIED"):
                try:
                    await self._provision(pvc)
                except (ApiError, OSError) as e:
                    log.warning("provisioning %s/%s: %s", pvc["metadata"].get("namespace"),
                                pvc["metadata"].get("name"), e)

    async def _provision(self, pvc: Obj) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        annotations = meta.get("annotations") or {}
        if spec.get("volumeName") or (pvc.get("status") or {}).get("phase") == "Bound":
            return
        if spec.get("storageClassName") != STORAGE_CLASS:
            return
        if annotations.get("volume.kubernetes.io/selected-node") != self.node:
            return  # WaitForFirstConsumer: not scheduled yet, or scheduled elsewhere
        name = f"pvc-{meta['uid']}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                             "name": meta["name"], "uid": meta["uid"]},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.node]}]}]}},
            },
        }
        try:
            await self.api.request("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])
        except ApiError as e:
            if e.status != 409:
                raise

    async def _volumes(self) -> None:
        async for etype, pv in self.api.informer("/api/v1/persistentvolumes"):
            if etype not in ("SYNC", "ADDED", "MODIFIED"):
                continue
            meta = pv["metadata"]
            ours = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            if ours and (pv.get("status") or {}).get("phase") == "Released":
                path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
                if path and Path(path).parent == self.root:
                    shutil.rmtree(path, ignore_errors=True)
                try:
                    await self.api.request("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
                except ApiError as e:
                    log.warning("deleting %s: %s", meta["name"], e)
