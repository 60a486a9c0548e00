"""`ModelDeployment.spec.rollout`: progressive delivery of a candidate variant.

The shape follows Flagger's `spec.analysis` and Argo Rollouts' analysis (steps of weights,
an interval, a failure limit, a minimum request count, metrics with thresholds), and adds
what neither has: the MLflow alias that promotion moves and rollback leaves alone.

The declared variant weights stay what the user wrote; during a rollout the operator drives
the effective weights (status.rollout, status.weights).
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import DNS_LABEL, DURATION, ApiModel, cel, parse_duration, require_unique, schema_extra
from .trainingrun import MLFLOW_ALIAS, check_alias

# Variables a custom PromQL template may use, as {{name}}.
TEMPLATE_VARIABLES = ("namespace", "name", "variant", "version", "model", "interval")
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
BUILTIN_METRICS = ("successRate", "latencyP99", "dataDrift")
DEFAULT_ALIAS = "champion"


def template_variables(query: str) -> list[str]:
    """The {{variables}} a PromQL template uses, in order of appearance."""
    return _TEMPLATE_VARIABLE.findall(query)


class RolloutMetric(ApiModel):
    """One analysis metric: a built-in one or a PromQL template, with a threshold."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("has(self.builtin) != has(self.query)", "set exactly one of builtin or query"),
            cel("has(self.min) || has(self.max)", "set min, max or both"),
            cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not exceed max"),
        )
    )

    name: str = Field(pattern=DNS_LABEL, min_length=1, max_length=63, description="Metric name (in status and Events).")
    builtin: Literal["successRate", "latencyP99", "dataDrift"] | None = Field(
        default=None,
        description="successRate (share of non-5xx inference responses, 0-1), latencyP99 (seconds), "
        "from the serving runtime's metrics, or dataDrift (share of watched features drifted from the "
        "version's training data over the interval, 0-1; thresholds from spec.monitoring).",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL returning one number; may use {{namespace}}, {{name}}, {{variant}}, {{version}}, "
        "{{model}} and {{interval}}.",
    )
    min: float | None = Field(default=None, description="The check fails below this value.")
    max: float | None = Field(default=None, description="The check fails above this value.")

    @field_validator("query")
    @classmethod
    def _known_variables(cls, query: str | None) -> str | None:
        if query is None:
            return None
        unknown = sorted({v for v in template_variables(query) if v not in TEMPLATE_VARIABLES})
        if unknown:
            raise ValueError(
                f"unknown template variable(s) {', '.join('{{' + v + '}}' for v in unknown)}; "
                f"known: {', '.join('{{' + v + '}}' for v in TEMPLATE_VARIABLES)}"
            )
        return query

    @model_validator(mode="after")
    def _shape(self) -> RolloutMetric:
        if (self.builtin is None) == (self.query is None):
            raise ValueError(f"metric {self.name!r}: set exactly one of builtin or query")
        if self.min is None and self.max is None:
            raise ValueError(f"metric {self.name!r}: set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metric {self.name!r}: min must not exceed max")
        return self


def default_metrics() -> list[RolloutMetric]:
    """What a rollout analyses when it lists no metrics: at least 99 % of inference requests
    succeed, and p99 latency stays under half a second."""
    return [
        RolloutMetric(name="success-rate", builtin="successRate", min=0.99),
        RolloutMetric(name="latency-p99", builtin="latencyP99", max=0.5),
    ]


class RolloutSpec(ApiModel):
    """Move a candidate variant in by steps; promote or roll back on measured metrics."""

    candidate: str = Field(
        pattern=DNS_LABEL, max_length=20, description="The variant being rolled out (it follows an alias or a pinned version)."
    )
    alias: str = Field(
        default=DEFAULT_ALIAS,
        pattern=MLFLOW_ALIAS,
        max_length=100,
        description="The stable alias: another variant follows it, and promotion moves it to the candidate's version.",
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        min_length=1,
        max_length=20,
        description="Candidate traffic per step, in percent, strictly increasing (e.g. [10, 25, 50]).",
        json_schema_extra={
            **schema_extra(cel("self.isSorted()", "steps must be in increasing order")),
            "x-kubernetes-list-type": "set",  # with isSorted: strictly increasing
        },
    )
    interval: str = Field(default="1m", pattern=DURATION, max_length=32, description="Time per step and per analysis.")
    failure_limit: int = Field(default=2, ge=1, le=100, description="Failed checks before rollback.")
    min_requests: int = Field(
        default=10, ge=0, le=1_000_000,
        description="Candidate requests an interval needs; with fewer the check is inconclusive (no pass, no failure).",
    )
    metrics: list[RolloutMetric] | None = Field(
        default=None,
        max_length=16,
        description="What is checked each interval; default successRate >= 0.99 and latencyP99 <= 0.5 s.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        max_length=512,
        description="Prometheus to query; default the operator's DOCKYARD_PROMETHEUS_URL.",
    )
    manual_approval: bool = Field(default=False, description="After the last step, wait for `dockyard approve` (or the annotation).")
    bake_window: str = Field(
        default="0s", pattern=DURATION, max_length=32,
        description="After promotion, keep analysing this long; a failure reverts the alias.",
    )

    _alias_not_reserved = field_validator("alias")(check_alias)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 100 for s in steps):
            raise ValueError("steps are percentages from 1 to 100")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        return steps

    @field_validator("metrics")
    @classmethod
    def _unique_metric_names(cls, metrics: list[RolloutMetric] | None) -> list[RolloutMetric] | None:
        names = [m.name for m in metrics or []]
        require_unique(names, "metric")
        return metrics

    def interval_seconds(self) -> int:
        return max(1, parse_duration(self.interval))

    def bake_seconds(self) -> int:
        return parse_duration(self.bake_window)

    def analysed_metrics(self) -> list[RolloutMetric]:
        return self.metrics if self.metrics else default_metrics()


# Where a rollout is (status.rollout.phase).
RolloutPhase = Literal["Idle", "Waiting", "Progressing", "AwaitingApproval", "Baking", "Promoted", "RolledBack", "Blocked"]


class MetricResult(ApiModel):
    """The last analysis of one metric."""

    name: str = Field(description="Metric name.")
    value: float | None = Field(default=None, description="Measured value (absent when there was no data).")
    min: float | None = Field(default=None, description="Lower threshold.")
    max: float | None = Field(default=None, description="Upper threshold.")
    result: Literal["Passed", "Failed", "Inconclusive", "Error"] = Field(description="Outcome of this check.")
    message: str | None = Field(default=None, description="Why, when not Passed.")


class RolloutStatus(ApiModel):
    """Observed state of the rollout (status.rollout)."""

    phase: RolloutPhase = Field(description="Idle, Waiting, Progressing, AwaitingApproval, Baking, Promoted, RolledBack or Blocked.")
    candidate_version: str | None = Field(default=None, description="The version being rolled out.")
    stable_version: str | None = Field(default=None, description="The stable alias's version when the rollout started.")
    step: int = Field(default=0, description="Current step, 1-based; 0 before the first.")
    steps: int = Field(default=0, description="Number of steps.")
    candidate_weight: int = Field(default=0, description="Effective candidate traffic, in percent.")
    step_started_at: str | None = Field(default=None, description="When the current step (or bake window) began.")
    traffic_since: str | None = Field(
        default=None,
        description="When the router began serving the current step's weights; the step's first analysis "
                    "interval counts from here (a builtin router rolls its Pods to change weights).")
    next_check_at: str | None = Field(default=None, description="When the next analysis runs.")
    failed_checks: int = Field(default=0, description="Failed checks so far.")
    analysis: list[MetricResult] | None = Field(default=None, description="The last analysis, per metric.")
    previous_version: str | None = Field(default=None, description="After promotion: the version the alias pointed at before.")
    approved_by: str | None = Field(default=None, description="Who or what approved the candidate.")
    approved_at: str | None = Field(default=None, description="When.")
    reason: str | None = Field(default=None, description="Machine-readable reason of the phase.")
    message: str | None = Field(default=None, description="Human-readable detail (the failing metric, its value and threshold).")
    summary: str | None = Field(default=None, description="One line for kubectl get, e.g. `2/3 25%`.")
