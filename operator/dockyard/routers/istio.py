"""``router.type: istio``: an Istio VirtualService splitting traffic by weight.

Decision: the router still creates the Service ``<md>`` (port 80 -> each variant pod's
``http`` port) selecting the pods of *every* variant. Mesh clients call
``http://<md>.<ns>`` exactly as with the builtin router: the name must resolve in DNS for the
client's sidecar to intercept the call, and the sidecar then applies this VirtualService
(default host: that Service). Without a sidecar the Service alone balances by pod count, not
by weight - the weights need the mesh.

Routes, in order: with ``spec.router.allowVariantForcing`` only (off by default), one route per
live variant when the force header (lowercased; Istio matches lowercase header names) equals
the variant name; then the weighted route. Without forcing there are no force routes, so the
header is ignored (Envoy forwards it; it picks nothing) and only the weighted route, which lists
no weight-0 variant, remains. Every route carries ``timeout`` =
``spec.router.limits.timeoutSeconds`` (default 60 s; the whole request, Envoy answers 504). Body
size limits and per-client rate limits need Envoy filters (EnvoyFilter, or Istio's
rate-limit service), not VirtualService fields: the API refuses them for this router. Shadow variants get
no route of their own: every route carries ``mirrors`` (the v1 list form, one entry per shadow,
so several shadows work) with ``percentage.value`` = the shadow percentage; Envoy discards
the mirrored responses. Istio weights are
integers: the spec weights are normalised to whole percent summing to exactly 100 (largest
remainder, every positive weight at least 1); weight-0 variants are left out of the
weighted route but keep their force route (when forcing is allowed). Each destination sets
``X-Dockyard-Variant`` and ``X-Dockyard-Model-Version`` on the response.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from ..config import OperatorConfig
from .builtin import build_router_service
from .common import (
    ROUTER_COMPONENT,
    VARIANT_RESPONSE_HEADER,
    VERSION_RESPONSE_HEADER,
    check_resolved,
    http_port,
    integer_percentages,
    live_variants,
    owned_custom_object,
    owner_name_ns,
    require_header_name,
    require_hostname,
    router_service_name,
    serving_selector,
    shadow_variants,
    variant_fqdn,
)

API_VERSION = "networking.istio.io/v1"
KIND = "VirtualService"

# spec.router.istio.hosts/gateways are free strings in the API: only these shapes reach the
# VirtualService. No bare "*" (it would capture every host in the mesh).
_GATEWAY = re.compile(r"mesh|([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _istio_host(host: str) -> str:
    if host.startswith("*."):
        return "*." + require_hostname(host[2:])
    return require_hostname(host)


def _istio_gateway(gateway: str) -> str:
    if not isinstance(gateway, str) or len(gateway) > 253 or _GATEWAY.fullmatch(gateway) is None:
        raise ValueError(f"refusing istio gateway {gateway!r}: expected mesh, <name> or <namespace>/<name>")
    return gateway


def build_virtual_service(
    owner: dict[str, Any], spec: ModelDeploymentSpec, resolved: Mapping[str, str], cfg: OperatorConfig
) -> dict[str, Any]:
    """VirtualService ``<md>``: force-header routes, then the weighted route."""
    md_name, ns = owner_name_ns(owner)
    versions = check_resolved(spec, resolved)
    port = http_port(spec.runtime)
    shares = integer_percentages(spec)
    istio = spec.router.istio
    hosts = [_istio_host(h) for h in (istio.hosts if istio and istio.hosts else [router_service_name(md_name)])]
    force = require_header_name(spec.router.force_header).lower()

    def destination(name: str) -> dict[str, Any]:
        return {
            "destination": {"host": variant_fqdn(ns, md_name, name, cfg), "port": {"number": port}},
            "headers": {"response": {"set": {
                VARIANT_RESPONSE_HEADER: name,
                VERSION_RESPONSE_HEADER: versions[name],
            }}},
        }

    mirrors = [
        {"destination": {"host": variant_fqdn(ns, md_name, name, cfg), "port": {"number": port}},
         "percentage": {"value": float(percent)}}
        for name, percent in shadow_variants(spec)
    ]
    live = live_variants(spec)
    timeout = spec.router.effective_limits().effective_timeout_seconds()
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise ValueError(f"refusing timeout {timeout!r}")
    http: list[dict[str, Any]] = [
        {
            "name": f"force-{v.name}",
            "match": [{"headers": {force: {"exact": v.name}}}],
            "route": [destination(v.name)],
        }
        for v in live
        if spec.router.allow_variant_forcing is True
    ]
    http.append({
        "name": "weighted",
        "route": [{**destination(v.name), "weight": shares[v.name]} for v in live if shares[v.name] > 0],
    })
    for route in http:
        route["timeout"] = f"{timeout}s"
    if mirrors:
        for route in http:
            route["mirrors"] = copy.deepcopy(mirrors)  # no shared objects (YAML anchors in dumps)
    vs_spec: dict[str, Any] = {"hosts": hosts, "http": http}
    if istio and istio.gateways:
        vs_spec["gateways"] = [_istio_gateway(g) for g in istio.gateways]
    return owned_custom_object(owner, spec, api_version=API_VERSION, kind=KIND, component=ROUTER_COMPONENT,
                               body=vs_spec)


def build_router_objects(
    owner: dict[str, Any], spec: ModelDeploymentSpec, resolved: Mapping[str, str], cfg: OperatorConfig
) -> list[dict[str, Any]]:
    """The ``<md>`` Service over every variant's pods, then the VirtualService."""
    md_name, _ = owner_name_ns(owner)
    service = build_router_service(owner, spec, selector=serving_selector(md_name), target_port="http")
    return [service, build_virtual_service(owner, spec, resolved, cfg)]
