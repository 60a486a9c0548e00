"""What the serving builder and the four routers share: child names, ports, weight
normalisation and the defence-in-depth checks on every string that reaches a router config.

Everything here is pure. The pydantic API models already validate user strings; the
``require_*`` helpers re-check them right where they are written into a config, so a spec
that bypassed validation (``model_construct``, a future refactor, a direct call) still cannot
inject into nginx, Istio or Seldon objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec, Variant
from ..config import OperatorConfig
from ..labels import (
    MODEL_LABEL,
    ROUTER_COMPONENT,
    SERVING_COMPONENT,
    child_name,
    owner_reference,
    selector_labels,
    stamp_spec_hash,
    standard_labels,
)
from ..runtime.serve import health_paths, metrics_path, runtime_ports

OWNER_KIND = "ModelDeployment"

# Response headers every router that can set them adds.
VARIANT_RESPONSE_HEADER = "X-Dockyard-Variant"
VERSION_RESPONSE_HEADER = "X-Dockyard-Model-Version"
MODEL_RESPONSE_HEADER = "X-Dockyard-Model"

# The user-facing router Service (builtin and istio): port 80 in front of the router's 8080.
ROUTER_SERVICE_PORT = 80
ROUTER_CONTAINER_PORT = 8080

# Strict, anchored-by-fullmatch patterns (Python's `$` would accept a trailing newline, so
# every check uses re.fullmatch on patterns without anchors).
_VARIANT = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HEADER = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_HOST = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_ABS_PATH = re.compile(r"/[A-Za-z0-9._/-]{0,254}")
# A model artifact URI for Seldon's storage initializer: a scheme, then only unreserved URI
# characters and a few delimiters (no whitespace, quotes, parentheses, semicolons, backslashes
# or control characters).
_URI = re.compile(r"[a-z][a-z0-9+.-]{0,31}:[A-Za-z0-9._~:/?#@&+,=%-]{1,2000}")


def _require(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"refusing {what} {value!r}: it must match {pattern.pattern!r}")
    return value


def require_variant_name(value: object) -> str:
    return _require(_VARIANT, value, "variant name")


def require_header_name(value: object) -> str:
    return _require(_HEADER, value, "header name")


def require_model_name(value: object) -> str:
    return _require(_MODEL_NAME, value, "model name")


def require_version(value: object) -> str:
    return _require(_VERSION, value, "model version")


def require_hostname(value: object) -> str:
    host = _require(_HOST, value, "host name")
    if len(host) > 253:
        raise ValueError(f"refusing host name {host[:40]!r}...: longer than 253 characters")
    return host


def require_upstream(value: object) -> str:
    """``host:port`` with a DNS name or dotted IPv4 host and a port in 1..65535."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"refusing upstream {value!r}: expected host:port")
    host, port = value.split(":")
    require_hostname(host)
    _require(_PORT, port, "upstream port")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"refusing upstream {value!r}: port out of range")
    return value


def require_abs_path(value: object) -> str:
    path = _require(_ABS_PATH, value, "path")
    if ".." in path.split("/"):
        raise ValueError(f"refusing path {path!r}: no '..' components")
    return path


def require_model_uri(value: object) -> str:
    return _require(_URI, value, "model URI")


def nginx_header_variable(header: str) -> str:
    """``X-User-Id`` -> ``$http_x_user_id`` (how nginx exposes a request header)."""
    return "$http_" + require_header_name(header).lower().replace("-", "_")


# -- names, ports, labels ----------------------------------------------------------------------


def variant_service_name(md_name: str, variant: str) -> str:
    """Deployment and Service name of one variant: ``<md>-<variant>``."""
    return child_name(md_name, variant)


def router_name(md_name: str) -> str:
    """ConfigMap and Deployment name of the builtin router: ``<md>-router``."""
    return child_name(md_name, "router")


def router_service_name(md_name: str) -> str:
    """The user-facing Service (builtin and istio routers): the ModelDeployment's own name."""
    return child_name(md_name)


def ports_for(runtime: str) -> dict[str, int]:
    """Container/Service ports of a runtime (from ``dockyard.runtime.serve``)."""
    return runtime_ports(runtime)


def http_port(runtime: str) -> int:
    return runtime_ports(runtime)["http"]


def probe_paths(runtime: str) -> dict[str, str]:
    return health_paths(runtime)


def scrape_path(runtime: str) -> str:
    return metrics_path(runtime)


def variant_fqdn(owner_ns: str, md_name: str, variant: str, cfg: OperatorConfig) -> str:
    """Cluster DNS name of a variant Service."""
    svc = variant_service_name(md_name, require_variant_name(variant))
    return f"{svc}.{require_hostname(owner_ns)}.svc.{require_hostname(cfg.cluster_domain)}"


def serving_selector(md_name: str, variant: str | None = None) -> dict[str, str]:
    """Selector of a variant's pods (or of every variant's pods when ``variant`` is None).

    Only stable labels: never the model version (a Deployment selector is immutable, and a
    version change must roll pods, not orphan them).
    """
    extra = {} if variant is None else {"dockyard.dev/variant": variant}
    return selector_labels(owner_kind=OWNER_KIND, owner_name=md_name, component=SERVING_COMPONENT, **extra)


def router_selector(md_name: str) -> dict[str, str]:
    return selector_labels(owner_kind=OWNER_KIND, owner_name=md_name, component=ROUTER_COMPONENT)


def owner_name_ns(owner: Mapping[str, Any]) -> tuple[str, str]:
    meta = owner["metadata"]
    return str(meta["name"]), str(meta["namespace"])


# -- weights -----------------------------------------------------------------------------------


def normalise_weights(weights: Sequence[tuple[str, int]], total: int) -> dict[str, int]:
    """Split ``total`` units between named weights, deterministically.

    Largest-remainder (Hamilton) apportionment in exact integer arithmetic; remainders tie
    by declaration order. Two guarantees on top:

    * a weight of 0 gets 0 units;
    * a positive weight gets at least 1 unit (taken from the largest share, earliest first),
      so rounding never silently turns a variant off (1 vs 999 at ``total=100`` is 1/99).

    The result always sums to exactly ``total``.
    """
    if total <= 0:
        raise ValueError("total must be positive")
    if any(w < 0 for _, w in weights):
        raise ValueError("weights must not be negative")
    names = [n for n, _ in weights]
    if len(set(names)) != len(names):
        raise ValueError("weight names must be unique")
    weight_sum = sum(w for _, w in weights)
    if weight_sum <= 0:
        raise ValueError("at least one weight must be above 0")
    positive = [n for n, w in weights if w > 0]
    if len(positive) > total:
        raise ValueError(f"cannot give {len(positive)} positive weights at least 1 of {total} units")

    units = {n: w * total // weight_sum for n, w in weights}
    remainders = {n: w * total % weight_sum for n, w in weights}
    left = total - sum(units.values())
    order = sorted(range(len(weights)), key=lambda i: (-remainders[names[i]], i))
    for i in order[:left]:
        units[names[i]] += 1

    for name in positive:
        if units[name] == 0:
            donor = max(names, key=lambda n: (units[n], -names.index(n)))
            units[donor] -= 1
            units[name] = 1
    assert sum(units.values()) == total
    return units


def variant_weights(spec: ModelDeploymentSpec) -> list[tuple[str, int]]:
    """Live weights in declaration order, shadows at 0. Read from ``spec.live_weights()`` only:
    a canary rollout hands the routers a spec copy carrying its effective weights."""
    live = spec.live_weights()
    return [(v.name, live[v.name]) for v in spec.variants]


def live_variants(spec: ModelDeploymentSpec) -> list[Variant]:
    """Variants that may answer clients (every variant but the shadows), names checked."""
    return [v for v in check_variants(spec) if v.shadow is None]


def shadow_variants(spec: ModelDeploymentSpec) -> list[tuple[str, int]]:
    """``(name, percent of live requests mirrored)`` of every shadow variant, names checked."""
    out = []
    for v in check_variants(spec):
        if v.shadow is None:
            continue
        if not isinstance(v.shadow, int) or isinstance(v.shadow, bool) or not 1 <= v.shadow <= 100:
            raise ValueError(f"refusing shadow percentage {v.shadow!r} of variant {v.name!r}: expected 1..100")
        out.append((v.name, v.shadow))
    return out


def percent_units(spec: ModelDeploymentSpec) -> dict[str, int]:
    """Per-variant share in hundredths of a percent (sums to exactly 10000)."""
    return normalise_weights(variant_weights(spec), 10000)


def integer_percentages(spec: ModelDeploymentSpec) -> dict[str, int]:
    """Per-variant share as whole percent (sums to exactly 100): Istio and Seldon weights."""
    return normalise_weights(variant_weights(spec), 100)


def format_percent(units: int) -> str:
    """10000ths -> ``"80.00%"`` (nginx split_clients accepts at most two decimals)."""
    return f"{units // 100}.{units % 100:02d}%"


def check_resolved(spec: ModelDeploymentSpec, resolved: Mapping[str, str]) -> dict[str, str]:
    """Every variant needs an exact, well-formed resolved version."""
    missing = [v.name for v in spec.variants if v.name not in resolved]
    if missing:
        raise ValueError(f"no resolved version for variant(s): {', '.join(missing)}")
    return {v.name: require_version(resolved[v.name]) for v in spec.variants}


def check_variants(spec: ModelDeploymentSpec) -> list[Variant]:
    for v in spec.variants:
        require_variant_name(v.name)
    return list(spec.variants)


def owned_custom_object(owner: Mapping[str, Any], spec: ModelDeploymentSpec, *, api_version: str, kind: str,
                        component: str, body: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A child object with a spec (HTTPRoute, VirtualService, SeldonDeployment, NetworkPolicy),
    named after the ModelDeployment unless `name` says otherwise, with the standard labels, the
    owner reference and the spec hash."""
    md_name, ns = owner_name_ns(owner)
    obj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name or router_service_name(md_name),
            "namespace": ns,
            "labels": standard_labels(owner_kind=OWNER_KIND, owner_name=md_name, component=component,
                                      extra={MODEL_LABEL: spec.model_name}),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": body,
    }
    return stamp_spec_hash(obj)
