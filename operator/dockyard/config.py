"""Operator settings, read once from the environment (the Helm chart sets these)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .api.common import parse_duration


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class OperatorConfig:
    # MLflow as the operator reaches it, and as Pods reach it (often the same in-cluster URL).
    mlflow_tracking_uri: str = "http://dockyard-mlflow:5000"
    mlflow_tracking_uri_for_pods: str = "http://dockyard-mlflow:5000"
    # Secret (in each workload namespace) holding MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN for Pods.
    mlflow_credentials_secret: str = ""
    # The embedded MLflow runs basic-auth: the operator (an MLflow admin) gives each workload
    # namespace its own MLflow user and Secret (dockyard.registry_access); Pods load that one.
    mlflow_workload_credentials: bool = False
    # An external MLflow over https with a private CA: the operator's own copy of the CA (a
    # file), and the ConfigMap (key ca.crt, in each workload namespace) that Pods mount.
    mlflow_ca_file: str = ""
    mlflow_ca_configmap: str = ""
    runtime_image: str = "ghcr.io/dockyard-dev/dockyard-runtime:0.1.0"
    router_image: str = "nginxinc/nginx-unprivileged:1.27-alpine"
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""  # service account for Job/serving Pods; "" = namespace default
    metrics_port: int = 8000
    log_format: str = "text"  # text | json
    workers: int = 16
    alias_refresh_seconds_min: int = 5
    history_limit: int = 10
    resync_seconds: float = 300.0  # re-list every watched kind (heals DELETEs missed in a watch gap)
    lease_seconds: float = 15.0  # leader election: how long followers wait on a silent leader
    enabled_routers: frozenset[str] = field(
        default_factory=lambda: frozenset({"builtin", "gateway", "istio", "seldon"})
    )
    # TrainingRun.spec.backend types the operator accepts (job always).
    enabled_backends: frozenset[str] = field(default_factory=lambda: frozenset({"job", "trainjob", "rayjob"}))
    cluster_domain: str = "cluster.local"
    # Prometheus that rollout analysis queries ("" = none; a rollout may name its own).
    prometheus_url: str = ""
    # How often Prometheus scrapes the serving Pods: analysis rate windows are at least 4 scrapes.
    prometheus_scrape_interval_seconds: int = 30
    # A NetworkPolicy per ModelDeployment over its serving Pods (docs/network-policies.md).
    network_policies: bool = True
    # NetworkPolicyPeers (JSON list) allowed to scrape the serving Pods' metrics port.
    network_policy_prometheus_peers: tuple[dict[str, Any], ...] = field(
        default_factory=lambda: (dict(DEFAULT_PROMETHEUS_PEER),)
    )
    # NetworkPolicyPeers that count as "the router" for gateway and istio ModelDeployments;
    # empty: the Gateways' namespaces (gateway), the ModelDeployment's namespace (istio).
    network_policy_router_peers: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_env(cls) -> OperatorConfig:
        tracking = _env("DOCKYARD_MLFLOW_TRACKING_URI", _env("MLFLOW_TRACKING_URI", cls.mlflow_tracking_uri))
        routers = _env("DOCKYARD_ENABLED_ROUTERS", "builtin,gateway,istio,seldon")
        return cls(
            mlflow_tracking_uri=tracking,
            mlflow_tracking_uri_for_pods=_env("DOCKYARD_MLFLOW_TRACKING_URI_FOR_PODS", tracking),
            mlflow_credentials_secret=_env("DOCKYARD_MLFLOW_CREDENTIALS_SECRET", ""),
            mlflow_workload_credentials=parse_bool(_env("DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS", "false"),
                                                   "DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS"),
            mlflow_ca_file=_env("DOCKYARD_MLFLOW_CA_FILE", ""),
            mlflow_ca_configmap=_env("DOCKYARD_MLFLOW_CA_CONFIGMAP", ""),
            runtime_image=_env("DOCKYARD_RUNTIME_IMAGE", cls.runtime_image),
            router_image=_env("DOCKYARD_ROUTER_IMAGE", cls.router_image),
            image_pull_policy=_env("DOCKYARD_IMAGE_PULL_POLICY", cls.image_pull_policy),
            service_account=_env("DOCKYARD_WORKLOAD_SERVICE_ACCOUNT", ""),
            metrics_port=int(_env("DOCKYARD_METRICS_PORT", str(cls.metrics_port))),
            log_format=_env("DOCKYARD_LOG_FORMAT", cls.log_format),
            workers=int(_env("DOCKYARD_WORKERS", str(cls.workers))),
            history_limit=int(_env("DOCKYARD_HISTORY_LIMIT", str(cls.history_limit))),
            resync_seconds=float(_env("DOCKYARD_RESYNC_SECONDS", str(cls.resync_seconds))),
            lease_seconds=float(_env("DOCKYARD_LEASE_SECONDS", str(cls.lease_seconds))),
            enabled_routers=frozenset(r.strip() for r in routers.split(",") if r.strip()),
            enabled_backends=frozenset({"job"} | {b.strip() for b in _env(
                "DOCKYARD_ENABLED_BACKENDS", "job,trainjob,rayjob").split(",") if b.strip()}),
            cluster_domain=_env("DOCKYARD_CLUSTER_DOMAIN", cls.cluster_domain),
            prometheus_url=_env("DOCKYARD_PROMETHEUS_URL", "").strip(),
            prometheus_scrape_interval_seconds=parse_duration(_env("DOCKYARD_PROMETHEUS_SCRAPE_INTERVAL", "30s")),
            network_policies=parse_bool(_env("DOCKYARD_NETWORK_POLICIES", "true"), "DOCKYARD_NETWORK_POLICIES"),
            network_policy_prometheus_peers=parse_peers(
                _env("DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS", json.dumps([DEFAULT_PROMETHEUS_PEER])),
                "DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS"),
            network_policy_router_peers=parse_peers(_env("DOCKYARD_NETWORK_POLICY_ROUTER_PEERS", "[]"),
                                                    "DOCKYARD_NETWORK_POLICY_ROUTER_PEERS"),
        )


# Where Prometheus runs unless told otherwise: any Pod of the namespace called "monitoring"
# (kube-prometheus-stack's and the Prometheus Operator's usual home).
DEFAULT_PROMETHEUS_PEER: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
}
_PEER_KEYS = frozenset({"namespaceSelector", "podSelector", "ipBlock"})


def parse_bool(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def parse_peers(value: str, name: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of NetworkPolicyPeer objects (namespaceSelector/podSelector/ipBlock).
    Checked at start-up, so a typo stops the operator instead of producing a policy the
    apiserver refuses for every ModelDeployment."""
    try:
        peers = json.loads(value or "[]")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: not JSON: {exc}") from exc
    if not isinstance(peers, list):
        raise ValueError(f"{name}: expected a JSON list of NetworkPolicyPeer objects")
    for peer in peers:
        if not isinstance(peer, dict) or not peer or not set(peer) <= _PEER_KEYS:
            raise ValueError(f"{name}: every peer is an object with namespaceSelector, podSelector "
                             f"and/or ipBlock, got {peer!r}")
        if any(not isinstance(v, dict) for v in peer.values()):
            raise ValueError(f"{name}: selectors and ipBlock are objects, got {peer!r}")
    return tuple(peers)
