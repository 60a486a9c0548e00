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

from pydantic import BaseModel, ConfigDict, Field
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
# Kubernetes resource quantity (simplified but strict: no spaces, no quotes).
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"

ConditionStatus = Literal["True", "False", "Unknown"]


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


def is_valid_duration(value: str) -> bool:
    return re.fullmatch(DURATION, value) is not None


def parse_duration(value: str) -> int:
    """Seconds in a Go-style duration such as ``1h30m`` (only h/m/s units)."""
    if not is_valid_duration(value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 10m, 1h30m")
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([hms])", value))
