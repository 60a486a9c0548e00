"""The `ModelDeployment` kind: serve registered model versions and split traffic between them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    DURATION,
    MODEL_NAME,
    ApiModel,
    BaseStatus,
    ResourceRequirements,
    Scheduling,
    cel,
    require_unique,
    schema_extra,
)
from .monitoring import MonitoringSpec, MonitoringStatus
from .rollout import RolloutSpec, RolloutStatus
from .trainingrun import MLFLOW_ALIAS, check_alias

KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAMES = ["mdep"]

# HTTP header names (RFC 7230 token, restricted): letters, digits and dashes only, so a
# header name is also a safe nginx variable suffix ($http_x_user_id).
HEADER_NAME = r"^[A-Za-z][A-Za-z0-9-]*$"
# The ModelDeployment's name becomes Service names (`<name>`, `<name>-<variant>`), and Services
# must be DNS-1035 labels: start with a letter. Bounded so `<name>-<variant>` fits in 63.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 42
# metadata.name restrictions in the CRD schema: the one thing a CRD may say about metadata
# (name and generateName). kube-apiserver then refuses a bad name with field `metadata.name`
# (a root-level CEL rule could not name the field: fieldPath may only point inside the schema).
NAME_SCHEMA = {"type": "string", "maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN}
NAME_MESSAGE = (
    f"metadata.name must be a DNS-1035 label (start with a letter) of at most {NAME_MAX_LENGTH} "
    "characters: it names the Services"
)


def check_name(name: str) -> str | None:
    """Why a ModelDeployment name can't be used, or None (mirror of NAME_SCHEMA)."""
    import re

    if len(name) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, name):
        return NAME_MESSAGE
    return None


SELDON_SHADOW_MESSAGE = (
    "router.type seldon mirrors every request to one shadow predictor: at most one shadow variant, "
    "with shadow: 100"
)

ISTIO_GATEWAY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Variant(Scheduling):
    """One model version served behind the router; nodeSelector, tolerations and affinity
    place its serving Pods (say, a GPU variant beside a CPU one)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("has(self.version) != has(self.alias)", "set exactly one of version or alias")
        )
    )

    name: str = Field(
        pattern=DNS_LABEL,
        min_length=1,
        max_length=20,
        description="Variant name (DNS label); names the serving Deployment and Service.",
    )
    version: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,8}$", description="Exact registered model version."
    )
    alias: str | None = Field(
        default=None,
        pattern=MLFLOW_ALIAS,
        max_length=100,
        description="MLflow alias (e.g. champion); re-resolved periodically.",
    )
    weight: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Relative share of traffic (default 1, so unweighted variants split evenly); 0 = no traffic.",
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Serving replicas for this variant.")
    shadow: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Make this a shadow variant: it receives this percentage of live requests as mirrored "
        "copies, its responses are discarded, and it takes no live traffic (its weight is ignored).",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the serving container."
    )

    _alias_not_reserved = field_validator("alias")(check_alias)

    @model_validator(mode="after")
    def _version_xor_alias(self) -> Variant:
        if (self.version is None) == (self.alias is None):
            raise ValueError(f"variant {self.name!r}: set exactly one of version or alias")
        return self


class StickySession(ApiModel):
    """Sticky assignment: requests with the same header value always reach the same variant."""

    header: str = Field(
        pattern=HEADER_NAME, max_length=64, description="Request header identifying a user, e.g. X-User-Id."
    )


class ParentRef(ApiModel):
    """A Gateway API parentRef (the Gateway the HTTPRoute attaches to)."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Gateway name.")
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63, description="Gateway namespace.")
    section_name: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63, description="Listener name.")


class GatewayRouter(ApiModel):
    """Settings for `router.type: gateway`."""

    parent_refs: list[ParentRef] = Field(
        default_factory=list, max_length=32, description="Gateways to attach the HTTPRoute to."
    )
    # The pattern on each item (not a validator) so the CRD schema rejects bad hostnames too.
    hostnames: list[Annotated[str, Field(pattern=HOSTNAME, max_length=253)]] | None = Field(
        default=None, max_length=16, description="Hostnames matched by the HTTPRoute."
    )


class IstioRouter(ApiModel):
    """Settings for `router.type: istio`."""

    # A bare "*" would capture every host in the mesh: hosts must name something.
    hosts: list[Annotated[str, Field(pattern=HOSTNAME, max_length=253)]] | None = Field(
        default=None, max_length=16, description="VirtualService hosts; default the router Service name."
    )
    gateways: list[Annotated[str, Field(pattern=ISTIO_GATEWAY, max_length=253)]] | None = Field(
        default=None, max_length=16, description="Istio gateways (`name` or `namespace/name`, or `mesh`); default the mesh."
    )


# The request body limit: a Kubernetes-style binary quantity, 1Ki-99999Ki or 1Mi-256Mi (the
# router buffers bodies above 16Ki to its /tmp volume, sized from this limit).
BODY_SIZE = r"^([1-9][0-9]{0,4}Ki|([1-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-6])Mi)$"
DEFAULT_MAX_BODY_SIZE = "16Mi"
DEFAULT_TIMEOUT_SECONDS = 60
EDGE_BUILTIN_ONLY_MESSAGE = (
    "router.limits.maxBodySize and router.limits.rateLimit are enforced by the builtin router only"
)
EDGE_SELDON_TIMEOUT_MESSAGE = "router.limits.timeoutSeconds is not supported by router.type seldon"


def body_size_bytes(quantity: str) -> int:
    """``16Mi`` -> 16777216 (the two suffixes BODY_SIZE allows)."""
    if not isinstance(quantity, str) or not re.fullmatch(BODY_SIZE.strip("^$"), quantity):
        raise ValueError(f"refusing body size {quantity!r}: expected 1Ki-99999Ki or 1Mi-256Mi")
    return int(quantity[:-2]) * (1024 if quantity.endswith("Ki") else 1024 * 1024)


class RateLimit(ApiModel):
    """A per-client request rate limit (builtin router), keyed by the client's address."""

    requests_per_second: int = Field(
        ge=1, le=100000, description="Sustained requests per second allowed from one client address."
    )
    burst: int | None = Field(
        default=None,
        ge=0,
        le=100000,
        description="Requests above the rate a client may send at once before it gets 429 "
        "(default: requestsPerSecond, one second's worth).",
    )

    def effective_burst(self) -> int:
        return self.requests_per_second if self.burst is None else self.burst


class RouterLimits(ApiModel):
    """The router's edge: what a client request may be, and how long a variant may take.
    Refusals answer with a JSON body in the V2 error shape, {"error": "..."}."""

    max_body_size: str | None = Field(
        default=None,
        pattern=BODY_SIZE,
        max_length=8,
        description=f"Largest request body accepted, 1Ki-99999Ki or 1Mi-256Mi (default {DEFAULT_MAX_BODY_SIZE}); "
        "a larger one is refused with 413. Builtin router only.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description=f"How long a variant may take to answer (default {DEFAULT_TIMEOUT_SECONDS}); then the "
        "client gets 504. Builtin: the longest wait for the next bytes of the answer; gateway and "
        "istio: the whole request.",
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="Per-client rate limit (builtin router); requests beyond it get 429. Off by default.",
    )

    def effective_max_body_size(self) -> str:
        return DEFAULT_MAX_BODY_SIZE if self.max_body_size is None else self.max_body_size

    def effective_timeout_seconds(self) -> int:
        # `is None`, not `or`: an unvalidated 0 must reach the renderers' checks, not become 60.
        return DEFAULT_TIMEOUT_SECONDS if self.timeout_seconds is None else self.timeout_seconds


class RouterSpec(ApiModel):
    """How live traffic is split between variants."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("!has(self.limits) || (!has(self.limits.maxBodySize) && !has(self.limits.rateLimit))"
                " || !has(self.type) || self.type == 'builtin'", EDGE_BUILTIN_ONLY_MESSAGE, ".limits"),
            cel("!has(self.limits) || !has(self.limits.timeoutSeconds) || !has(self.type) || self.type != 'seldon'",
                EDGE_SELDON_TIMEOUT_MESSAGE, ".limits.timeoutSeconds"),
        )
    )

    type: Literal["builtin", "gateway", "istio", "seldon"] = Field(
        default="builtin",
        description="builtin (nginx, any cluster), gateway (HTTPRoute), istio (VirtualService) or seldon (SeldonDeployment).",
    )
    sticky: StickySession | None = Field(default=None, description="Sticky assignment by request header (builtin router).")
    force_header: str = Field(
        default="X-Dockyard-Variant",
        pattern=HEADER_NAME,
        max_length=64,
        description="Request header that forces a variant by name, for testing (builtin and istio "
        "routers); honoured only with allowVariantForcing.",
    )
    allow_variant_forcing: bool = Field(
        default=False,
        description="Let clients pick a variant (weight 0 included) with forceHeader. Off by default: the "
        "builtin router then refuses a request carrying forceHeader with 403, and istio renders no "
        "force routes.",
    )
    gateway: GatewayRouter | None = Field(default=None, description="Gateway API settings.")
    istio: IstioRouter | None = Field(default=None, description="Istio settings.")
    replicas: int = Field(default=1, ge=1, le=20, description="Replicas of the builtin nginx router.")
    limits: RouterLimits | None = Field(
        default=None,
        description="The router's edge: body size limit, variant timeout, per-client rate limit.",
    )

    @model_validator(mode="after")
    def _edge_fits_the_router(self) -> RouterSpec:
        problem = self.edge_problem()
        if problem:
            raise ValueError(problem)
        return self

    def edge_problem(self) -> str | None:
        """Why spec.router.limits does not fit router.type (mirror of the CEL rules), or None."""
        limits = self.limits
        if limits is None:
            return None
        if self.type != "builtin" and (limits.max_body_size is not None or limits.rate_limit is not None):
            return EDGE_BUILTIN_ONLY_MESSAGE
        if self.type == "seldon" and limits.timeout_seconds is not None:
            return EDGE_SELDON_TIMEOUT_MESSAGE
        return None

    def effective_limits(self) -> RouterLimits:
        return self.limits or RouterLimits()


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("!has(self.rollout) || self.variants.exists(v, v.name == self.rollout.candidate && !has(v.shadow))",
                "rollout.candidate must name a variant that is not a shadow", ".rollout.candidate"),
            cel("!has(self.rollout) || self.variants.exists(v, has(v.alias) && v.alias == self.rollout.alias"
                " && v.name != self.rollout.candidate && !has(v.shadow))",
                "another variant than the candidate must follow the stable alias (rollout.alias)", ".rollout.alias"),
            # Seldon Core mirrors every request to at most one shadow predictor (no percentage).
            cel("!has(self.router) || !has(self.router.type) || self.router.type != 'seldon' || "
                "self.variants.filter(v, has(v.shadow)).all(v, v.shadow == 100) && "
                "self.variants.filter(v, has(v.shadow)).size() <= 1",
                SELDON_SHADOW_MESSAGE, ".variants"),
        )
    )

    model_name: str = Field(
        pattern=MODEL_NAME, max_length=200, description="Registered model name in the MLflow Model Registry."
    )
    variants: list[Variant] = Field(
        min_length=1,
        max_length=10,
        description="Variants to serve; traffic is split by weight.",
        json_schema_extra={
            **schema_extra(
                cel("self.all(v, self.exists_one(w, w.name == v.name))", "variant names must be unique"),
                cel("self.exists(v, v.weight > 0 && !has(v.shadow))",
                    "at least one variant that is not a shadow needs a weight above 0"),
            ),
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    runtime: Literal["mlserver", "seldon"] = Field(
        default="mlserver",
        description="mlserver (Apache-2.0, default) or seldon (seldon-core microservice, BSL 1.1).",
    )
    router: RouterSpec = Field(
        default_factory=RouterSpec,
        description="Traffic router.",
        json_schema_extra={"default": {}},  # so the API server fills in router.type=builtin
    )
    alias_refresh_interval: str = Field(
        default="60s", pattern=DURATION, max_length=32, description="How often aliases are re-resolved."
    )
    image: str | None = Field(
        default=None, max_length=512, description="Override the serving runtime image."
    )
    rollout: RolloutSpec | None = Field(
        default=None, description="Progressive delivery of one variant: canary steps, analysis, promotion, rollback."
    )
    monitoring: MonitoringSpec | None = Field(
        default=None,
        description="Data drift monitoring: compare live traffic with each served version's training data.",
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        require_unique(names, "variant")
        if not any(v.weight > 0 and v.shadow is None for v in variants):
            raise ValueError("at least one variant that is not a shadow needs a weight above 0")
        return variants

    @model_validator(mode="after")
    def _seldon_shadow(self) -> ModelDeploymentSpec:
        shadows = [v.shadow for v in self.variants if v.shadow is not None]
        if self.router.type == "seldon" and (len(shadows) > 1 or any(p != 100 for p in shadows)):
            raise ValueError(f"variants: {SELDON_SHADOW_MESSAGE}")
        return self

    @model_validator(mode="after")
    def _rollout_variants(self) -> ModelDeploymentSpec:
        problem = self.rollout_problem()
        if problem:
            raise ValueError(problem)
        return self

    def rollout_problem(self) -> str | None:
        """Why spec.rollout does not fit the variants (mirror of the CEL rules), or None."""
        if self.rollout is None:
            return None
        by_name = {v.name: v for v in self.variants}
        candidate = by_name.get(self.rollout.candidate)
        if candidate is None:
            return f"rollout.candidate {self.rollout.candidate!r} is not a variant"
        if candidate.shadow is not None:
            return f"rollout.candidate {candidate.name!r} is a shadow variant"
        if candidate.alias == self.rollout.alias:
            return f"rollout.candidate {candidate.name!r} follows the stable alias {self.rollout.alias!r} itself"
        if not any(v.alias == self.rollout.alias and v.shadow is None for v in self.variants):
            return f"no variant follows the stable alias {self.rollout.alias!r} (rollout.alias)"
        return None

    def stable_variant(self) -> Variant | None:
        """The variant that follows the rollout's stable alias."""
        if self.rollout is None:
            return None
        return next((v for v in self.variants if v.alias == self.rollout.alias and v.shadow is None), None)

    def live_weights(self) -> dict[str, int]:
        """Declared weights, with shadow variants at 0 (they only get mirrored copies)."""
        return {v.name: 0 if v.shadow is not None else v.weight for v in self.variants}

    def weight_percentages(self) -> dict[str, float]:
        weights = self.live_weights()
        total = sum(weights.values())
        return {name: 100.0 * w / total for name, w in weights.items()}


class VariantStatus(ApiModel):
    """Observed state of one variant."""

    name: str = Field(description="Variant name.")
    resolved_version: str | None = Field(default=None, description="Exact model version being served.")
    model_uri: str | None = Field(default=None, description="models:/<name>/<version>.")
    weight: int | None = Field(default=None, description="Configured weight.")
    replicas: int | None = Field(default=None, description="Desired replicas.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of this variant.")


class ModelDeploymentStatus(BaseStatus):
    """Observed state of a ModelDeployment."""

    endpoint: str | None = Field(default=None, description="In-cluster URL of the router.")
    variants: list[VariantStatus] | None = Field(default=None, description="Per-variant state.")
    weights: str | None = Field(default=None, description="Effective weights such as a=80,b=20 (printer column).")
    rollout: RolloutStatus | None = Field(default=None, description="Progressive delivery state.")
    monitoring: MonitoringStatus | None = Field(default=None, description="Data drift, per variant.")


VALID_PHASES = ("Pending", "Resolving", "Progressing", "Ready", "Degraded", "Invalid", "Failed")

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.modelName"},
    {"name": "Weights", "type": "string", "jsonPath": ".status.weights"},
    {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
    {"name": "Step", "type": "string", "jsonPath": ".status.rollout.summary"},
    {"name": "Drift", "type": "string", "jsonPath": '.status.conditions[?(@.type=="DataDrift")].status'},
    {"name": "Router", "type": "string", "jsonPath": ".spec.router.type", "priority": 1},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
