"""`TrainingRun.spec.sweep`: a hyperparameter search instead of one fixed configuration, and
`status.sweep`, its progress. Each trial is a child MLflow run with its own Job; only the best
trial's model is gated and registered (docs/sweeps.md).

Samplers are plain Python (grid: the product of the values; random: each trial drawn from a
generator seeded by the sweep's seed and the trial's index), so a trial's parameters depend on
nothing but the spec: an operator restarted mid-sweep plans the very same trials. Optuna was
considered for random/TPE search and left out: it needs numpy and SQLAlchemy in an operator
image that has neither, and TPE's suggestions depend on the order results arrive in, which a
restart-safe plan cannot.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import PARAM_NAME, ApiModel, HyperValue, cel, require_unique, schema_extra

MAX_TRIALS = 200
METRIC_NAME = r"^[A-Za-z0-9_.-]+$"


class SweepParameter(ApiModel):
    """One searched hyperparameter: a list of values, or a range."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            # `values` holds untyped scalars, which CEL cannot see: "values or a range, not
            # both" is checked by the spec model and reported in status (InvalidSpec).
            cel("has(self.min) == has(self.max)", "a range needs both min and max"),
            cel("!has(self.min) || !has(self.max) || self.min < self.max",
                "the range is empty: min must be below max", ".min"),
            cel("!has(self.scale) || self.scale != 'log' || !has(self.min) || self.min > 0.0",
                "a log scale needs min > 0", ".min"),
        )
    )

    name: str = Field(pattern=PARAM_NAME, max_length=64, description="Hyperparameter name (a Python identifier).")
    values: list[HyperValue] | None = Field(
        default=None, min_length=1, max_length=100, description="The values to try.")
    min: float | None = Field(default=None, description="Lower end of the range (inclusive).")
    max: float | None = Field(default=None, description="Upper end of the range (inclusive).")
    scale: Literal["linear", "log"] = Field(default="linear", description="How the range is spread: linear or log.")
    type: Literal["float", "int"] = Field(default="float", description="float, or int (rounded).")
    steps: int | None = Field(
        default=None, ge=2, le=100,
        description="Grid search: how many points of the range to try (evenly spread on the scale); default 3.")

    @model_validator(mode="after")
    def _shape(self) -> SweepParameter:
        has_range = self.min is not None or self.max is not None
        if (self.values is not None) == has_range:
            raise ValueError("set either values or a range (min and max), not both")
        if has_range and (self.min is None or self.max is None):
            raise ValueError("a range needs both min and max")
        if self.min is not None and self.max is not None:
            if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min >= self.max:
                raise ValueError(f"the range is empty: min ({self.min:g}) must be below max ({self.max:g})")
            if self.scale == "log" and self.min <= 0:
                raise ValueError("a log scale needs min > 0")
            if self.type == "int" and math.floor(self.max) < math.ceil(self.min):
                raise ValueError(f"no integer lies in [{self.min:g}, {self.max:g}]")
        return self

    def grid_points(self) -> int:
        return len(self.values) if self.values is not None else (self.steps or 3)


class SweepSpec(ApiModel):
    """Search hyperparameters: grid or random, trials in parallel, the best by one metric."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("self.strategy != 'random' || has(self.maxTrials)", "random search needs maxTrials (a trial budget)",
                ".maxTrials"),
        )
    )

    strategy: Literal["grid", "random"] = Field(
        default="grid", description="grid (every combination) or random (maxTrials draws).")
    parameters: list[SweepParameter] = Field(
        min_length=1, max_length=20,
        description="Searched hyperparameters; fixed ones stay in trainer.estimator.hyperparameters.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    max_trials: int | None = Field(
        default=None, ge=1, le=MAX_TRIALS,
        description=f"Trial budget: random draws, or a cap on the grid (at most {MAX_TRIALS}).")
    parallelism: int = Field(default=1, ge=1, le=20, description="Trials running at once.")
    metric: str = Field(pattern=METRIC_NAME, max_length=250, description="MLflow metric that ranks trials.")
    direction: Literal["maximize", "minimize"] = Field(default="maximize", description="maximize or minimize.")
    target: float | None = Field(
        default=None,
        description="Early stop: once a trial reaches this value, start no new trial and stop the running ones.")
    max_failed_share: float | None = Field(
        default=None, ge=0, le=1,
        description="Fail the sweep when more than this share of its trials fails (default: only when all fail).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the random strategy.")

    @field_validator("parameters")
    @classmethod
    def _unique(cls, parameters: list[SweepParameter]) -> list[SweepParameter]:
        names = [p.name for p in parameters]
        require_unique(names, "parameter")
        return parameters

    def by_name(self) -> dict[str, SweepParameter]:
        return {p.name: p for p in self.parameters}

    @model_validator(mode="after")
    def _budget(self) -> SweepSpec:
        if self.strategy == "random" and self.max_trials is None:
            raise ValueError("random search needs maxTrials (a trial budget)")
        if self.strategy == "grid":
            size = math.prod(p.grid_points() for p in self.parameters)
            cap = self.max_trials or MAX_TRIALS
            if size > cap:
                raise ValueError(f"the grid has {size} combinations, more than "
                                 f"{'maxTrials' if self.max_trials else 'the limit of'} {cap}")
        return self

    def better(self, a: float, b: float) -> bool:
        """`a` ranks above `b`."""
        return a > b if self.direction == "maximize" else a < b

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.direction == "maximize" else value <= self.target


TrialPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"]


class Trial(ApiModel):
    """One trial of the sweep."""

    index: int = Field(ge=0, description="Trial number, 0-based; its Job and MLflow run are named after it.")
    parameters: dict[str, HyperValue] = Field(description="The searched values this trial used.")
    phase: TrialPhase = Field(default="Pending", description="Pending, Running, Succeeded, Failed or Stopped.")
    mlflow_run_id: str | None = Field(default=None, description="The trial's MLflow run (a child of the sweep's).")
    job_name: str | None = Field(default=None, description="The trial's Job.")
    value: float | None = Field(default=None, description="The sweep metric's value.")
    message: str | None = Field(default=None, description="Why it failed or stopped.")


class SweepStatus(ApiModel):
    """Progress of the sweep (status.sweep)."""

    planned: int = Field(description="Trials the sweep will run.")
    succeeded: int = Field(default=0, description="Trials that finished with the metric.")
    failed: int = Field(default=0, description="Trials that failed.")
    running: int = Field(default=0, description="Trials running now.")
    best_trial: int | None = Field(default=None, description="Index of the best trial so far.")
    best_value: float | None = Field(default=None, description="Its metric value.")
    summary: str | None = Field(default=None, description="One line for kubectl get, e.g. `7/9 best 0.967`.")
    trials: list[Trial] | None = Field(default=None, description="Every trial started so far, by index.")
