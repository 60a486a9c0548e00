"""`ModelDeployment.spec.monitoring` and `status.monitoring`: drift of live traffic from the
data each served version was trained on (docs/monitoring.md).

Defaults follow Evidently where it has one (Jensen-Shannon distance above 0.1 for categorical
features, dataset drift when half of the features drift). For numeric features the PSI
threshold defaults to 0.25, the "significant" band: with the minimum sample of 100 and ten
bins, PSI's sampling noise alone is about 0.1, so the "moderate" band would raise false alarms.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from .common import DURATION, ApiModel, cel, parse_duration, schema_extra

MIN_WINDOW_SECONDS = 10
MAX_WINDOW_SECONDS = 7 * 24 * 3600
FEATURE_NAME_MAX = 200
# Feature name the prediction column goes by in status and metrics.
PREDICTION = "__prediction__"


class MonitoringSpec(ApiModel):
    """Watch live traffic for drift against each served version's reference profile."""

    features: list[Annotated[str, Field(min_length=1, max_length=FEATURE_NAME_MAX)]] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Features to watch (names in the model's reference profile); default all of them.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    window: str = Field(
        default="10m",
        pattern=DURATION,
        max_length=32,
        description="Traffic window each evaluation looks at, and how often drift is evaluated (at least 10s; "
        "the operator widens it to four Prometheus scrape intervals).",
        json_schema_extra=schema_extra(
            cel(f"duration(self) >= duration('{MIN_WINDOW_SECONDS}s')",
                f"window must be at least {MIN_WINDOW_SECONDS}s"),
            cel("duration(self) <= duration('168h')", "window must be at most 168h"),
        ),
    )
    min_samples: int = Field(
        default=100, ge=1, le=100_000_000,
        description="Values a feature needs in a window; with fewer the window is inconclusive.",
    )
    psi_threshold: float = Field(
        default=0.25, gt=0, le=10,
        description="A numeric feature drifts when its PSI exceeds this (bands: <0.1 stable, 0.1-0.25 moderate, "
        ">0.25 significant).",
    )
    js_threshold: float = Field(
        default=0.1, gt=0, lt=1,
        description="A categorical feature drifts when its Jensen-Shannon distance exceeds this (0-1).",
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1,
        description="The dataset drifts when at least this share of the watched features drift.",
    )
    report: bool = Field(
        default=True,
        description="On drift, attach a drift report (PNG) to the served version's MLflow run.",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        max_length=512,
        description="Prometheus to query; default the operator's DOCKYARD_PROMETHEUS_URL.",
    )

    @field_validator("window")
    @classmethod
    def _window_bounds(cls, window: str) -> str:
        seconds = parse_duration(window)
        if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"window must be between {MIN_WINDOW_SECONDS}s and 168h, got {window}")
        return window

    @field_validator("features")
    @classmethod
    def _unique(cls, features: list[str] | None) -> list[str] | None:
        if features is not None and len(set(features)) != len(features):
            raise ValueError("features must be unique")
        return features

    def window_seconds(self) -> int:
        return parse_duration(self.window)


# The outcome of one window for one variant.
DriftResult = Literal["Drift", "NoDrift", "Inconclusive", "NoReference", "Error"]


class FeatureDrift(ApiModel):
    """Drift of one feature (or of the predictions) over the last window."""

    name: str = Field(description=f"Feature name; {PREDICTION} for the model's predictions.")
    method: Literal["psi", "jensenshannon"] = Field(description="psi (numeric) or jensenshannon (categorical).")
    score: float | None = Field(default=None, description="Drift score; absent when the window was inconclusive.")
    threshold: float = Field(description="Drifted above this.")
    drifted: bool | None = Field(default=None, description="Score above the threshold.")
    samples: int = Field(default=0, description="Values counted in the window.")
    anomalies: dict[str, int] | None = Field(
        default=None, description="Values that were missing, out_of_range, unseen or invalid (non-zero kinds only).")


class VariantDrift(ApiModel):
    """The last evaluation of one variant's served version."""

    name: str = Field(description="Variant name.")
    version: str = Field(description="Model version the traffic was served by.")
    result: DriftResult = Field(description="Drift, NoDrift, Inconclusive, NoReference or Error.")
    reason: str | None = Field(default=None, description="Machine-readable reason of the result.")
    requests: int = Field(default=0, description="Requests counted in the window.")
    drifted_features: int = Field(default=0, description="Watched features that drifted.")
    watched_features: int = Field(default=0, description="Features watched.")
    features: list[FeatureDrift] | None = Field(
        default=None, description="Per feature, the most drifted first (at most 20).")
    prediction: FeatureDrift | None = Field(default=None, description="Drift of the predictions.")
    report: str | None = Field(default=None, description="MLflow artifact URI of the last drift report.")
    message: str | None = Field(default=None, description="Why, in words.")


class MonitoringStatus(ApiModel):
    """Observed drift (status.monitoring)."""

    window_seconds: int | None = Field(default=None, description="Effective window, in seconds.")
    last_evaluation: str | None = Field(default=None, description="When drift was last evaluated.")
    consecutive_drift_windows: int = Field(
        default=0, description="Windows in a row with dataset drift (inconclusive windows neither add nor reset).")
    drift_since: str | None = Field(default=None, description="Start of the current drift.")
    variants: list[VariantDrift] | None = Field(default=None, description="Per variant.")
