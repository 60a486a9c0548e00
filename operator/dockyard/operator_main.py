"""`dockyard operator`: wire kopf's watches, leader election and probes to the Dockyard controllers.

kopf handlers here are deliberately thin: every watch event goes to :meth:`Runtime.observe`
(cache + queue); the controllers in :mod:`dockyard.controllers` do the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import kopf

from . import __version__, metrics
from .config import OperatorConfig
from .controllers import dataset, modeldeployment, trainingrun
from .controllers.base import Cache, Context, EventRecorder, Runtime, Watched, WorkQueue
from .kube import Credentials, KubeClient, kopf_login
from .labels import MANAGED_BY
from .leader import LeaderElector, LeaseConfig
from .mlflow_client import MlflowClient
from .registry_access import WorkloadCredentials

log = logging.getLogger("dockyard")

GROUP_VERSION = "dockyard.dev/v1alpha1"
CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_SELECTOR = ",".join(f"{k}={v}" for k, v in CHILD_LABELS.items())
CHILD_RESOURCES = (("batch", "jobs"), ("apps", "deployments"))


def build_registry(state: dict[str, Any], cfg: OperatorConfig, namespaces: Sequence[str] = (),
                   lease: LeaseConfig | None = None, stop_flag: asyncio.Event | None = None) -> kopf.OperatorRegistry:
    """A fresh registry whose handlers feed one Runtime (kept in `state['runtime']`)."""
    registry = kopf.OperatorRegistry()

    # One set of credentials for kopf's watches and the controllers' client (dockyard.kube):
    # in-cluster service account, else KUBECONFIG; exec plugins re-run when their token expires.
    credentials = Credentials()
    logins = 0

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        nonlocal logins
        logins += 1
        info: kopf.ConnectionInfo = await kopf_login(credentials, first=logins == 1,
                                                     trust_env=settings.networking.trust_env)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post our own Events, with our own reasons
        # No runtime scanning of namespaces and CRDs: the operator serves the namespaces it is
        # given (or all) and the kinds that exist at start-up, so it needs no cluster-wide
        # list/watch of namespaces or CRDs (kopf's dynamic mode would, and in namespaced scope
        # it retried the forbidden list forever).
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        # Only our own children are streamed, not every Job and Deployment in the cluster.
        for group, plural in CHILD_RESOURCES:
            settings.watching.label_selectors[group, plural] = CHILD_SELECTOR
        kube = KubeClient(credentials)
        mlflow = MlflowClient(cfg.mlflow_tracking_uri, ca_file=cfg.mlflow_ca_file)
        ctx = Context(kube=kube, mlflow=mlflow, cfg=cfg, cache=Cache(), queue=WorkQueue(), events=EventRecorder(kube),
                      registry=WorkloadCredentials(kube, mlflow, enabled=cfg.mlflow_workload_credentials))
        # Every replica watches and caches; only the Lease holder's workers reconcile.
        elector = LeaderElector(kube, lease) if lease is not None else None
        runtime = Runtime(ctx, namespaces=list(namespaces), resync_seconds=cfg.resync_seconds,
                          leading=elector.leading if elector is not None else None)
        runtime.register(dataset.KIND, dataset.reconcile)
        runtime.register(trainingrun.KIND, trainingrun.reconcile)
        runtime.register(modeldeployment.KIND, modeldeployment.reconcile, forget=modeldeployment.forget)
        for kind in (dataset.KIND, trainingrun.KIND, modeldeployment.KIND):
            runtime.watch(Watched(kind, GROUP_VERSION))
        runtime.watch(Watched("Job", "batch/v1", CHILD_SELECTOR, keep_spec=False))
        runtime.watch(Watched("Deployment", "apps/v1", CHILD_SELECTOR, keep_spec=False))
        runtime.watch(Watched("ConfigMap", "v1", keep_spec=False))  # metadata only: not their data
        await runtime.start(cfg.workers)  # workers wait for the first list of every kind (and the Lease)
        state["runtime"] = runtime
        if elector is not None:
            state["elector"] = elector
            state["election"] = asyncio.create_task(_elect(elector, stop_flag), name="dockyard-leader-election")
        log.info("dockyard %s started; MLflow at %s", __version__, cfg.mlflow_tracking_uri)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        runtime: Runtime | None = state.pop("runtime", None)
        election: asyncio.Task[None] | None = state.pop("election", None)
        if election is not None:
            election.cancel()
        if runtime is not None:
            await runtime.stop()
            elector: LeaderElector | None = state.pop("elector", None)
            if elector is not None:
                await elector.release()  # after the workers stopped: a follower takes over at once
            await runtime.ctx.kube.close()
            await runtime.ctx.mlflow.close()

    def _runtime() -> Runtime:
        runtime: Runtime | None = state.get("runtime")
        if runtime is None:
            raise kopf.TemporaryError("operator not started yet", delay=1)
        return runtime

    @kopf.on.event(GROUP_VERSION, "datasets", registry=registry)
    async def on_dataset(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        runtime = _runtime()
        raw = dict(body)
        runtime.observe(dataset.KIND, event.get("type"), raw)
        # Dependents: TrainingRuns reading this Dataset.
        ns, name = raw["metadata"].get("namespace"), raw["metadata"].get("name")
        for tr in runtime.ctx.cache.by_kind(trainingrun.KIND, ns):
            if ((tr.get("spec") or {}).get("datasetRef") or {}).get("name") == name:
                runtime.ctx.queue.add((trainingrun.KIND, ns, tr["metadata"]["name"]))

    @kopf.on.event(GROUP_VERSION, "trainingruns", registry=registry)
    async def on_trainingrun(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        _runtime().observe(trainingrun.KIND, event.get("type"), dict(body))

    @kopf.on.event(GROUP_VERSION, "modeldeployments", registry=registry)
    async def on_modeldeployment(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        _runtime().observe(modeldeployment.KIND, event.get("type"), dict(body))

    @kopf.on.event("", "v1", "configmaps", registry=registry)
    async def on_configmap(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        # A Dataset reading this ConfigMap re-profiles when it changes; a router's ConfigMap
        # edited by hand wakes its ModelDeployment (drift).
        runtime = _runtime()
        raw = dict(body)
        runtime.observe_child("ConfigMap", event.get("type"), raw)
        ns, name = raw["metadata"].get("namespace"), raw["metadata"].get("name")
        for ds in runtime.ctx.cache.by_kind(dataset.KIND, ns):
            volume = (((ds.get("spec") or {}).get("source") or {}).get("volume") or {})
            if (volume.get("configMap") or {}).get("name") == name:
                runtime.ctx.queue.add((dataset.KIND, ns, ds["metadata"]["name"]))

    @kopf.on.event("batch/v1", "jobs", labels=CHILD_LABELS, registry=registry)
    async def on_job(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        _runtime().observe_child("Job", event.get("type"), dict(body))

    @kopf.on.event("apps/v1", "deployments", labels=CHILD_LABELS, registry=registry)
    async def on_deployment(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        _runtime().observe_child("Deployment", event.get("type"), dict(body))

    @kopf.on.probe(id="api", registry=registry)
    async def api_probe(**_: Any) -> str:
        runtime = _runtime()
        await runtime.ctx.kube.request("GET", "/version")  # raises: liveness fails, Pod restarts
        return "ok"

    @kopf.on.probe(id="mlflow", registry=registry)
    async def mlflow_probe(**_: Any) -> str:
        # Reported, never fatal: restarting the operator does not bring MLflow back.
        runtime = _runtime()
        return "reachable" if await runtime.ctx.mlflow.ping() else "unreachable"

    @kopf.on.probe(id="queue", registry=registry)
    def queue_probe(**_: Any) -> int:
        return len(_runtime().ctx.queue)

    return registry


async def _elect(elector: LeaderElector, stop_flag: asyncio.Event | None) -> None:
    await elector.run()
    if elector.lost.is_set() and stop_flag is not None:
        stop_flag.set()  # a leader that lost its Lease must stop reconciling: exit, restart as follower


async def run(
    *,
    cfg: OperatorConfig,
    namespaces: Sequence[str] = (),
    clusterwide: bool = True,
    lease: LeaseConfig | None = None,
    liveness_endpoint: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> bool:
    """Run the operator until `stop_flag` is set (or the task is cancelled). False when it
    stopped because it lost the leader Lease."""
    state: dict[str, Any] = {}
    stop_flag = stop_flag or asyncio.Event()
    registry = build_registry(state, cfg, namespaces, lease, stop_flag)
    await kopf.operator(
        registry=registry,
        clusterwide=clusterwide and not namespaces,
        namespaces=list(namespaces),
        standalone=True,  # kopf's peering pauses only its watches; leader election gates our workers
        liveness_endpoint=liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
    elector: LeaderElector | None = state.get("elector")
    return not (elector is not None and elector.lost.is_set())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(log_format: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("kopf").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="dockyard operator", description="Run the Dockyard operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    election = parser.add_mutually_exclusive_group()
    election.add_argument("--standalone", action="store_true",
                          help="no leader election: the only instance reconciles (default)")
    election.add_argument("--leader-elect", action="store_true",
                          help="reconcile only while holding the leader Lease (several replicas)")
    parser.add_argument("--leader-election-id", default="dockyard-operator", help="name of the Lease")
    parser.add_argument("--leader-election-namespace", default=None,
                        help="namespace of the Lease (default: $POD_NAMESPACE, else 'default')")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (0 = disabled)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(list(argv))

    cfg = OperatorConfig.from_env()
    configure_logging(cfg.log_format, args.verbose)
    port = cfg.metrics_port if args.metrics_port is None else args.metrics_port
    if port:
        metrics.serve(port)
    lease = None
    if args.leader_elect:
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        lease = LeaseConfig(namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default",
                            name=args.leader_election_id, identity=identity,
                            lease_seconds=cfg.lease_seconds, renew_deadline=cfg.lease_seconds * 2 / 3,
                            retry_seconds=max(cfg.lease_seconds / 7.5, 0.2))
    kept_lease = asyncio.run(run(
        cfg=cfg,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        lease=lease,
        liveness_endpoint=args.liveness,
    ))
    return 0 if kept_lease else 1
