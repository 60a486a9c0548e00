"""``router.type: gateway``: a Gateway API HTTPRoute splitting traffic by weight.

One rule, one weighted ``backendRef`` per live variant Service (port ``http``). Gateway API
weights are relative, so the live weights (``spec.live_weights()``) are used as they are; a
weight-0 variant stays listed with weight 0 (no traffic, Service kept). A shadow variant is no
backendRef: it gets a ``RequestMirror`` filter on the rule with ``percent`` = its shadow
percentage (Extended support in Gateway API: the Gateway implementation must support
mirroring, and fractional percentages are not used). The user-facing address is the Gateway's (``parentRefs``
and ``hostnames`` come from ``spec.router.gateway``). The force header and the variant
response header are builtin-router features: per-backend filters are only "extended" support
in Gateway API, so they are not emitted here: no request header can pick a variant, whatever
``allowVariantForcing`` says. The rule carries ``timeouts.request`` =
``spec.router.limits.timeoutSeconds`` (default 60 s): the whole request, from the Gateway's
point of view (Standard in Gateway API since v1.2; implementations answer 504). A body size
limit and a per-client rate limit have no HTTPRoute field; the API refuses them for this router.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from ..config import OperatorConfig
from .common import (
    ROUTER_COMPONENT,
    http_port,
    live_variants,
    owned_custom_object,
    owner_name_ns,
    require_hostname,
    shadow_variants,
    variant_service_name,
)

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"


def build_http_route(
    owner: dict[str, Any], spec: ModelDeploymentSpec, cfg: OperatorConfig
) -> dict[str, Any]:
    """HTTPRoute ``<md>`` with parentRefs/hostnames from the spec and weighted backendRefs."""
    md_name, _ = owner_name_ns(owner)
    port = http_port(spec.runtime)
    gw = spec.router.gateway
    parent_refs: list[dict[str, Any]] = []
    for ref in gw.parent_refs if gw else []:
        out: dict[str, Any] = {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": require_hostname(ref.name),
        }
        if ref.namespace:
            out["namespace"] = require_hostname(ref.namespace)
        if ref.section_name:
            out["sectionName"] = require_hostname(ref.section_name)
        parent_refs.append(out)
    weights = spec.live_weights()
    backend_refs = [
        {
            "group": "",
            "kind": "Service",
            "name": variant_service_name(md_name, v.name),
            "port": port,
            "weight": weights[v.name],
        }
        for v in live_variants(spec)
    ]
    timeout = spec.router.effective_limits().effective_timeout_seconds()
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise ValueError(f"refusing timeout {timeout!r}")
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": backend_refs,
        "timeouts": {"request": f"{timeout}s"},
    }
    mirrors = [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": variant_service_name(md_name, name),
                               "port": port},
                "percent": percent,
            },
        }
        for name, percent in shadow_variants(spec)
    ]
    if mirrors:
        rule["filters"] = mirrors
    route_spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": [rule]}
    if gw and gw.hostnames:
        route_spec["hostnames"] = [_hostname(h) for h in gw.hostnames]
    return owned_custom_object(owner, spec, api_version=API_VERSION, kind=KIND, component=ROUTER_COMPONENT,
                               body=route_spec)


def _hostname(host: str) -> str:
    # Gateway API allows one leading wildcard label.
    return "*." + require_hostname(host[2:]) if host.startswith("*.") else require_hostname(host)


def build_router_objects(
    owner: dict[str, Any], spec: ModelDeploymentSpec, resolved: Mapping[str, str], cfg: OperatorConfig
) -> list[dict[str, Any]]:
    del resolved  # an HTTPRoute does not depend on versions
    return [build_http_route(owner, spec, cfg)]
