"""Types shared by the three Dockyard API kinds.

Every spec/status model derives from :class:`ApiModel`: camelCase on the wire,
snake_case in Python, unknown fields refused (the API server prunes them before
the operator sees an object, so an unknown field here is a bug, not user input).

Rules the CRD schema enforces with CEL are declared next to the model with
:func:`cel` and mirrored by a pydantic validator, so the operator refuses the same
objects even on a cluster that skipped CRD validation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "dockyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "dockyard"

# RFC 1123 label: what Kubernetes accepts as a Service or label value; it is also
# safe inside an nginx config, a URL path and a shell word.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain (object names).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Registered model names end up in URLs, labels and nginx headers: keep them tame.
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Go-style duration made of s/m/h parts, e.g. "90s", "1h30m".
DURATION = r"^([0-9]+(s|m|h))+$"
# Label keys and values, as Kubernetes checks them (IsQualifiedName / IsValidLabelValue); the
# optional DNS-subdomain prefix of a key is not length-checked on its own (maxLength covers it).
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Kubernetes resource quantity (simplified but strict: no spaces, no quotes).
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"

ConditionStatus = Literal["True", "False", "Unknown"]
# Hyperparameter names become env var suffixes and MLflow param keys.
PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
HyperValue = str | int | float | bool | None


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def schema_extra(
    *validations: dict[str, str], preserve_unknown: bool = False
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if validations:
        extra["x-kubernetes-validations"] = list(validations)
    if preserve_unknown:
        extra["x-kubernetes-preserve-unknown-fields"] = True
    return extra


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
    )

    def to_api(self) -> dict[str, Any]:
        """Wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        description="Name of the referenced object.",
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


class Condition(ApiModel):
    """A condition in the Kubernetes API convention (metav1.Condition)."""

    type: str = Field(description="Condition type in CamelCase, e.g. Ready.", max_length=316)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="",
        description="Machine-readable CamelCase reason for the last transition.",
        max_length=1024,
    )
    message: str = Field(
        default="", description="Human-readable detail.", max_length=32768
    )
    last_transition_time: str | None = Field(
        default=None,
        description="RFC 3339 time the status last changed.",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed for.", ge=0
    )


QuantityStr = Annotated[str, Field(pattern=QUANTITY, max_length=64)]


class ResourceRequirements(ApiModel):
    """CPU/memory requests and limits, plus GPUs as a whole count."""

    requests: dict[str, QuantityStr] | None = Field(
        default=None, description="Requested resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, QuantityStr] | None = Field(
        default=None, description="Resource limits, e.g. {memory: 2Gi}."
    )
    gpus: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="NVIDIA GPUs to request (set as the nvidia.com/gpu limit).",
    )

    def to_container_resources(self) -> dict[str, Any]:
        """The container `resources` block; GPUs become an `nvidia.com/gpu` limit."""
        out: dict[str, Any] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        limits = dict(self.limits or {})
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        if limits:
            out["limits"] = limits
        return out


LabelValue = Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]


class Toleration(ApiModel):
    """A Pod toleration (core/v1 Toleration), checked the way the API server checks one."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                "a toleration without key must use operator Exists (it then tolerates every taint)",
            ),
            cel(
                "!(has(self.operator) && self.operator == 'Exists') || !has(self.value) || self.value == ''",
                "a toleration with operator Exists takes no value",
            ),
            cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds needs effect NoExecute",
            ),
        )
    )

    key: str | None = Field(
        default=None, pattern=LABEL_KEY, max_length=317, description="Taint key; unset with Exists matches every key."
    )
    operator: Literal["Equal", "Exists"] | None = Field(
        default=None, description="Equal (the default when unset) or Exists."
    )
    value: str | None = Field(
        default=None, pattern=LABEL_VALUE, max_length=63, description="Taint value, for operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="With NoExecute: how long the Pod stays after the taint appears."
    )

    @model_validator(mode="after")
    def _like_the_api_server(self) -> Toleration:
        exists = self.operator == "Exists"
        if not self.key and not exists:
            raise ValueError("a toleration without key must use operator Exists (it then tolerates every taint)")
        if exists and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class Affinity(ApiModel):
    """Pod affinity (core/v1 Affinity). The three parts are passed through to the Pod unchanged:
    typing the whole of core/v1 here would duplicate a large API the API server already checks
    when it creates the Job or Deployment."""

    node_affinity: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 NodeAffinity: which nodes the Pod may or prefers to run on.",
        json_schema_extra=schema_extra(preserve_unknown=True),
    )
    pod_affinity: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 PodAffinity: run near Pods matching a selector.",
        json_schema_extra=schema_extra(preserve_unknown=True),
    )
    pod_anti_affinity: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 PodAntiAffinity: keep away from Pods matching a selector.",
        json_schema_extra=schema_extra(preserve_unknown=True),
    )


class Scheduling(ApiModel):
    """Where the workload's Pods may run; GPU nodes are usually tainted and labelled."""

    node_selector: dict[str, LabelValue] | None = Field(
        default=None,
        # Keys are checked by the validator below, not in the schema: a key pattern would come
        # out as patternProperties, which a structural schema cannot carry, and a CEL regex over
        # the keys of an unbounded map exceeds the API server's CEL cost budget.
        description="Node labels the Pod's node must have, e.g. {nvidia.com/gpu.present: \"true\"}.",
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Taints the Pod tolerates, e.g. nvidia.com/gpu:NoSchedule."
    )
    affinity: Affinity | None = Field(default=None, description="Node and Pod affinity rules.")

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, selector: dict[str, str] | None) -> dict[str, str] | None:
        for key in selector or {}:
            if len(key) > 317 or not re.fullmatch(LABEL_KEY, key):
                shown = key if len(key) <= 64 else key[:61] + "..."
                raise ValueError(f"nodeSelector key {shown!r} is not a valid label key")
        return selector


class BaseStatus(ApiModel):
    """Fields every Dockyard status carries (kstatus compatible)."""

    phase: str | None = Field(default=None, description="Human-readable lifecycle phase.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation last reconciled."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Conditions in the Kubernetes convention; `Ready` summarises the object.",
    )
    message: str | None = Field(
        default=None, description="Human-readable summary of the current state.", max_length=32768
    )


def require_unique(names: list[str], what: str) -> None:
    """Raise a ValueError naming the repeats, for list items keyed by name (no CRD rule can
    say which ones repeat)."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique (repeated: {', '.join(dupes)})")


def is_valid_duration(value: str) -> bool:
    return re.fullmatch(DURATION, value) is not None


def parse_duration(value: str) -> int:
    """Seconds in a Go-style duration such as ``1h30m`` (only h/m/s units)."""
    if not is_valid_duration(value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 10m, 1h30m")
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([hms])", value))
