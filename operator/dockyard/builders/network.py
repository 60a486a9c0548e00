"""The NetworkPolicy of a ModelDeployment's serving Pods (docs/network-policies.md).

Pure: owner, validated spec and operator settings in, one NetworkPolicy dict (or None) out.

``<md>-serving`` selects every variant Pod of the ModelDeployment (the same stable labels
the variant Deployments select by) and allows, for Ingress only:

* the serving ports (``http``, and ``grpc`` for MLServer) from "the router":

  - ``builtin``: the Pods of this ModelDeployment's nginx router (same namespace);
  - ``gateway``: ``DOCKYARD_NETWORK_POLICY_ROUTER_PEERS`` when set, else every Pod in the
    namespaces of the Gateways in ``spec.router.gateway.parentRefs`` (a parentRef without a
    namespace means the ModelDeployment's). Gateway implementations that run their proxies
    in the Gateway's namespace work out of the box; Envoy Gateway (proxies in
    ``envoy-gateway-system``) and similar need the setting;
  - ``istio``: ``DOCKYARD_NETWORK_POLICY_ROUTER_PEERS`` when set, else every Pod in the
    ModelDeployment's namespace. In a mesh there is no router Pod: each client's sidecar
    applies the VirtualService and connects to the variant Pods itself, so a NetworkPolicy
    cannot tell "the router" from a client. Mesh clients in other namespaces and ingress
    gateways must be listed in the setting; identity-based rules belong in an Istio
    AuthorizationPolicy.

* the metrics port from ``DOCKYARD_NETWORK_POLICY_PROMETHEUS_PEERS``.

Nothing else reaches the serving Pods (kubelet probes come from the node, which common
policy engines - Calico, Cilium - always admit). ``router.type: seldon`` gets no policy:
Seldon Core runs those Pods, not Dockyard. The builtin router's own Pods are the edge and
get no policy: clients reach them from wherever they are.
"""

from __future__ import annotations

import copy
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from ..config import OperatorConfig
from ..labels import NETWORK_POLICY_COMPONENT, child_name
from ..routers.common import (
    owned_custom_object,
    owner_name_ns,
    ports_for,
    require_hostname,
    router_selector,
    serving_selector,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every Namespace by the apiserver


def network_policy_name(md_name: str) -> str:
    """``<md>-serving``."""
    return child_name(md_name, "serving")


def router_peers(owner_ns: str, md_name: str, spec: ModelDeploymentSpec, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Who counts as the router of this ModelDeployment (see the module docstring)."""
    router = spec.router.type
    if router == "builtin":
        return [{"podSelector": {"matchLabels": router_selector(md_name)}}]
    if cfg.network_policy_router_peers:
        return copy.deepcopy(list(cfg.network_policy_router_peers))  # the output is the caller's to change
    if router == "gateway":
        refs = spec.router.gateway.parent_refs if spec.router.gateway else []
        namespaces = sorted({require_hostname(ref.namespace or owner_ns) for ref in refs} or {owner_ns})
        return [{"namespaceSelector": {"matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]}}]
    if router == "istio":
        return [{"podSelector": {}}]  # every Pod of the ModelDeployment's own namespace
    raise ValueError(f"no router peers for router type {router!r}")


def build_network_policy(
    owner: dict[str, Any], spec: ModelDeploymentSpec, cfg: OperatorConfig
) -> dict[str, Any] | None:
    """NetworkPolicy ``<md>-serving``; None when the operator renders none for this spec."""
    if not cfg.network_policies or spec.router.type == "seldon":
        return None
    md_name, ns = owner_name_ns(owner)
    ports = ports_for(spec.runtime)
    serving = ["http", "grpc"] if spec.runtime == "mlserver" else ["http"]
    ingress: list[dict[str, Any]] = [{
        "from": router_peers(ns, md_name, spec, cfg),
        "ports": [{"protocol": "TCP", "port": ports[name]} for name in serving],
    }]
    if cfg.network_policy_prometheus_peers:
        ingress.append({
            "from": copy.deepcopy(list(cfg.network_policy_prometheus_peers)),
            "ports": [{"protocol": "TCP", "port": ports["metrics"]}],
        })
    return owned_custom_object(owner, spec, api_version=API_VERSION, kind=KIND, component=NETWORK_POLICY_COMPONENT,
                               name=network_policy_name(md_name), body={
                                   "podSelector": {"matchLabels": serving_selector(md_name)},
                                   "policyTypes": ["Ingress"],
                                   "ingress": ingress,
                               })
