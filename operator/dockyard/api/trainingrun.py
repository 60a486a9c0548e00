"""The `TrainingRun` kind: train a model on a Dataset, gate it, register it exactly once."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .backend import RAY_ARG_RULE, RAY_IMAGE_NEEDED, Backend, unsafe_ray_args
from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    DURATION,
    MODEL_NAME,
    PARAM_NAME,
    ApiModel,
    BaseStatus,
    HyperValue,
    ResourceRequirements,
    Scheduling,
    cel,
    parse_duration,
    schema_extra,
)
from .sweep import SweepSpec, SweepStatus

KIND = "TrainingRun"
PLURAL = "trainingruns"
SHORT_NAMES = ["tr"]

# A Python import path such as sklearn.ensemble.RandomForestClassifier.
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.[A-Z][A-Za-z0-9_]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
MLFLOW_ALIAS = r"^[A-Za-z][A-Za-z0-9_-]*$"
# MLflow refuses to set these aliases: `latest` (any case) and version-like `v3`.
RESERVED_ALIAS = r"[vV][0-9]+"


def check_alias(value: str | None) -> str | None:
    """Refuse the aliases MLflow reserves: `latest` (any case) and version-like `v3`."""
    if value is not None and (value.lower() == "latest" or re.fullmatch(RESERVED_ALIAS, value)):
        raise ValueError(f"alias {value!r} is reserved by MLflow")
    return value


IMMUTABLE = cel("self == oldSelf", "is immutable; create a new TrainingRun instead")


class DatasetRef(ApiModel):
    """Which Dataset to train on."""

    name: str = Field(description="Name of a Dataset in the same namespace.", pattern=DNS_SUBDOMAIN, max_length=253)
    version: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Pin a content version (sha256:<hex>); by default the Dataset's current one.",
    )


class EstimatorTrainer(ApiModel):
    """The built-in trainer: a scikit-learn-compatible estimator class and its hyperparameters."""

    class_path: str = Field(
        alias="class",
        pattern=IMPORT_PATH,
        max_length=256,
        description="Import path of the estimator, e.g. sklearn.ensemble.RandomForestClassifier.",
    )
    hyperparameters: dict[str, HyperValue] | None = Field(
        default=None,
        # Names are checked by the validator below, not by CEL: a regex over the keys of an
        # unbounded map exceeds the API server's estimated CEL cost budget, which would make
        # the whole CRD fail to install.
        description="Keyword arguments for the estimator (scalar values); coerced to the types it expects.",
    )
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto", description="Which metrics to compute; auto infers from the estimator."
    )
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Fraction of rows held out for evaluation."
    )
    random_seed: int = Field(default=42, ge=0, description="Seed for the train/test split.")

    @model_validator(mode="after")
    def _param_names(self) -> EstimatorTrainer:
        for key in self.hyperparameters or {}:
            if not re.fullmatch(PARAM_NAME, key):
                shown = key if len(key) <= 64 else key[:61] + "..."
                raise ValueError(f"hyperparameter name {shown!r} must be a Python identifier")
        return self


class EnvVar(ApiModel):
    """An environment variable with a literal value."""

    name: str = Field(pattern=ENV_NAME, max_length=256, description="Variable name.")
    value: str = Field(default="", max_length=32768, description="Literal value.")


class CustomTrainer(ApiModel):
    """Bring your own training container; see docs/training-contract.md for the contract."""

    image: str = Field(min_length=1, max_length=512, description="Container image.")
    command: list[str] | None = Field(default=None, description="Entrypoint (exec form, no shell).")
    args: list[str] | None = Field(default=None, description="Arguments.")
    env: list[EnvVar] | None = Field(default=None, description="Extra environment variables.")


class Trainer(ApiModel):
    """Exactly one of `estimator` (built-in trainer) or `custom` (your own container)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "has(self.estimator) != has(self.custom)",
                "set exactly one of trainer.estimator or trainer.custom",
            )
        )
    )

    estimator: EstimatorTrainer | None = Field(default=None, description="Built-in trainer.")
    custom: CustomTrainer | None = Field(default=None, description="Your own training image.")
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Override the runtime image used by the built-in trainer.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Trainer:
        if (self.estimator is None) == (self.custom is None):
            raise ValueError("set exactly one of trainer.estimator or trainer.custom")
        return self


class QualityGate(ApiModel):
    """Register the model only if a metric clears a threshold."""

    metric: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250, description="MLflow metric key, e.g. accuracy.")
    threshold: float = Field(description="The value to compare against.")
    direction: Literal["maximize", "minimize"] = Field(
        default="maximize",
        description="maximize: metric >= threshold passes; minimize: metric <= threshold passes.",
    )

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.direction == "maximize" else value <= self.threshold


class DriftTrigger(ApiModel):
    """Retrain when a ModelDeployment's traffic drifts for `windows` evaluations in a row."""

    model_deployment: str = Field(
        pattern=DNS_LABEL, max_length=63, description="ModelDeployment (same namespace) whose DataDrift is watched.")
    windows: int = Field(
        default=3, ge=1, le=1000, description="Consecutive drifted windows before an attempt starts.")
    cooldown: str = Field(
        default="1h", pattern=DURATION, max_length=32,
        description="Least time between two drift-triggered attempts (from the start of the last one).")

    def cooldown_seconds(self) -> int:
        return parse_duration(self.cooldown)


class RetryPolicy(ApiModel):
    """When to train again inside the same TrainingRun."""

    on_dataset_change: bool = Field(
        default=False,
        description="Start a new attempt when the Dataset records a new version (unpinned runs only).",
    )
    on_drift: DriftTrigger | None = Field(
        default=None,
        description="Start a new attempt, on the Dataset's current version, when a ModelDeployment reports "
        "sustained data drift.",
    )


class TrainingRunSpec(Scheduling):
    """Desired state of a TrainingRun.

    datasetRef, modelName, trainer and resources are immutable once created: a TrainingRun
    is a record of what was trained; change the recipe by creating a new one. nodeSelector,
    tolerations and affinity may change: they apply to the next attempt's Job (a Job's Pod
    template cannot change once created).
    """

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            # `self == oldSelf` on an optional field only runs when both sides have it.
            cel(
                "has(self.resources) == has(oldSelf.resources)",
                "resources is immutable; create a new TrainingRun instead",
            ),
            cel(
                "has(self.backend) == has(oldSelf.backend)",
                "backend is immutable; create a new TrainingRun instead",
            ),
            cel("!has(self.sweep) || !has(self.backend) || self.backend.type == 'job'",
                "sweep trials run as Jobs: a sweep needs backend.type job", ".sweep"),
            cel("!has(self.backend) || self.backend.type != 'rayjob' || !has(self.backend.rayJob) || "
                "has(self.backend.rayJob.clusterName) || has(self.trainer.custom) || has(self.trainer.image)",
                RAY_IMAGE_NEEDED, ".trainer"),
        )
    )

    dataset_ref: DatasetRef = Field(
        description="The Dataset to train on.", json_schema_extra=schema_extra(IMMUTABLE)
    )
    model_name: str = Field(
        pattern=MODEL_NAME,
        max_length=200,
        description="Registered model name in the MLflow Model Registry.",
        json_schema_extra=schema_extra(IMMUTABLE),
    )
    trainer: Trainer = Field(description="How to train.", json_schema_extra=schema_extra(IMMUTABLE))
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the training container.",
        json_schema_extra=schema_extra(IMMUTABLE),
    )
    backoff_limit: int = Field(default=0, ge=0, le=10, description="Job retries before failure.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Kill the training Job after this many seconds."
    )
    experiment: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^[^\x00-\x1f]+$",
        description="MLflow experiment; default `dockyard/<namespace>/<name>`.",
    )
    quality_gate: QualityGate | None = Field(
        default=None, description="Only register when this gate passes."
    )
    alias: str | None = Field(
        default=None,
        pattern=MLFLOW_ALIAS,
        max_length=100,
        description="MLflow alias to point at the new version on success, e.g. challenger.",
    )
    retrain: RetryPolicy | None = Field(default=None, description="Retraining policy.")
    sweep: SweepSpec | None = Field(
        default=None,
        description="Search hyperparameters: one child MLflow run and Job per trial; only the best is registered.",
    )
    backend: Backend | None = Field(
        default=None,
        description="Who runs training: job (default), trainjob (Kubeflow Trainer v2) or rayjob (KubeRay).",
        json_schema_extra=schema_extra(IMMUTABLE),
    )

    @field_validator("alias")
    @classmethod
    def _alias_not_reserved(cls, value: str | None) -> str | None:
        return check_alias(value)

    def backend_type(self) -> str:
        return self.backend.type if self.backend else "job"

    @model_validator(mode="after")
    def _sweep_runs_jobs(self) -> TrainingRunSpec:
        if self.sweep is not None and self.backend_type() != "job":
            raise ValueError("sweep trials run as Jobs: a sweep needs backend.type job")
        return self

    @model_validator(mode="after")
    def _ray_cluster_has_ray(self) -> TrainingRunSpec:
        ray = self.backend.ray_job if self.backend else None
        if ray is not None and not ray.cluster_name and not (self.trainer.custom or self.trainer.image):
            raise ValueError(f"spec.trainer: {RAY_IMAGE_NEEDED}")
        return self

    @model_validator(mode="after")
    def _ray_entrypoint_is_plain(self) -> TrainingRunSpec:
        # Without rayJob.entrypoint the driver runs trainer.custom's command: it gets the
        # entrypoint's rule here, where the CRD schema cannot tie the two fields together.
        ray = self.backend.ray_job if self.backend else None
        custom = self.trainer.custom
        if ray is None or ray.entrypoint is not None or custom is None:
            return self
        for field, args in (("command", custom.command or []), ("args", custom.args or [])):
            bad = unsafe_ray_args(args)
            if bad:
                raise ValueError(f"spec.trainer.custom.{field}[{bad[0]}] {args[bad[0]]!r} cannot be a RayJob entrypoint "
                                 f"argument: {RAY_ARG_RULE}; set backend.rayJob.entrypoint or move it into a script")
        return self

    @model_validator(mode="after")
    def _swept_not_fixed(self) -> TrainingRunSpec:
        est = self.trainer.estimator
        both = sorted(set(self.sweep.by_name()) & set(est.hyperparameters or {})) if self.sweep and est else []
        if both:
            raise ValueError(f"sweep.parameters {', '.join(both)} also fixed in trainer.estimator.hyperparameters: "
                             "keep each name in one place")
        return self


class Attempt(ApiModel):
    """One training attempt."""

    attempt: int = Field(ge=1, description="Attempt number, 1-based.")
    dataset_version: str | None = Field(default=None, description="Dataset version trained on.")
    mlflow_run_id: str | None = Field(default=None, description="MLflow run id.")
    job_name: str | None = Field(default=None, description="Training Job name.")
    result: str | None = Field(default=None, description="Succeeded, Rejected or Failed.")
    model_version: str | None = Field(default=None, description="Registered version, if any.")
    completion_time: str | None = Field(default=None, description="When it ended.")
    trigger: str | None = Field(default=None, description="Why it started: datasetChange or drift.")


class TrainingRunStatus(BaseStatus):
    """Observed state of a TrainingRun."""

    attempt: int | None = Field(default=None, ge=0, description="Current attempt number.")
    dataset_version: str | None = Field(default=None, description="Dataset version being used.")
    experiment_id: str | None = Field(default=None, description="MLflow experiment id.")
    mlflow_run_id: str | None = Field(default=None, description="MLflow run of the current attempt.")
    job_name: str | None = Field(default=None, description="Training Job of the current attempt.")
    metrics: dict[str, float] | None = Field(default=None, description="Final metrics from MLflow.")
    model_version: str | None = Field(default=None, description="Registered model version.")
    model_uri: str | None = Field(default=None, description="models:/<name>/<version>.")
    start_time: str | None = Field(default=None, description="When the current attempt started.")
    completion_time: str | None = Field(default=None, description="When the current attempt ended.")
    history: list[Attempt] | None = Field(default=None, description="Bounded list of attempts, newest last.")
    sweep: SweepStatus | None = Field(default=None, description="The current attempt's hyperparameter sweep.")
    trigger: str | None = Field(
        default=None, description="Why the current attempt started: datasetChange or drift (absent for the first).")
    trigger_message: str | None = Field(default=None, description="The trigger in words (for drift, the scores).")
    last_drift_retrain: str | None = Field(
        default=None, description="When the last drift-triggered attempt started (the cooldown counts from here).")


VALID_PHASES = (
    "Pending",
    "WaitingForData",
    "Running",
    "Registering",
    "Succeeded",
    "Rejected",
    "Failed",
    "Invalid",
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.modelName"},
    {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
    {"name": "Dataset", "type": "string", "jsonPath": ".spec.datasetRef.name"},
    {"name": "Trials", "type": "string", "jsonPath": ".status.sweep.summary"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
