"""The `Dataset` kind: where data lives, what it must look like, how often to re-check it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    DNS_LABEL,
    DURATION,
    ApiModel,
    BaseStatus,
    LocalObjectReference,
    cel,
    schema_extra,
)

KIND = "Dataset"
PLURAL = "datasets"
SHORT_NAMES = ["dset"]

DataFormat = Literal["csv", "parquet", "jsonl"]
ColumnType = Literal["integer", "float", "string", "boolean"]

_SOURCE_SCHEMES = r"^(file|https?|s3)://[^\s]+$"
# A file:// URI must not climb out of the volume: no `..` segment, and no percent-encoded `.`
# or `/` either, since the runtime decodes the path before opening it. No backslashes, so the
# same text serves as a Python and a CEL regex.
_FILE_ESCAPE = r"(^|/)[.][.]([/?#]|$)|%2[eEfF]"
# Path segments that are names: no empty, `.` or `..` segment, so `/` or `/data/..` (a volume
# over the root filesystem) cannot make every path "inside the mount".
_MOUNT_PATH = r"^(/(\.?[A-Za-z0-9_-]|\.\.[A-Za-z0-9._-])[A-Za-z0-9._-]*)+/?$"
OUTSIDE_VOLUME = (
    "a file:// uri must lie under source.volume.mountPath: the Pods mount nothing else, and any "
    "other path would read the runtime image's own files"
)
ESCAPES_VOLUME = "a file:// uri must not contain '..' segments or percent-encoded '.' or '/'"


class VolumeSource(ApiModel):
    """A volume the profiling and training Pods mount to read a `file://` source."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "has(self.persistentVolumeClaim) != has(self.configMap)",
                "set exactly one of persistentVolumeClaim or configMap",
            )
        )
    )

    persistent_volume_claim: LocalObjectReference | None = Field(
        default=None, description="Mount this PersistentVolumeClaim (read-only)."
    )
    config_map: LocalObjectReference | None = Field(
        default=None, description="Mount this ConfigMap; for small data sets only (< 1 MiB)."
    )
    mount_path: str = Field(
        default="/data",
        pattern=_MOUNT_PATH,
        max_length=256,
        description="Where the volume is mounted; `file://` URIs point inside it.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> VolumeSource:
        if (self.persistent_volume_claim is None) == (self.config_map is None):
            raise ValueError("set exactly one of persistentVolumeClaim or configMap")
        return self


class DataSource(ApiModel):
    """Where the data is read from."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "!self.uri.startsWith('file://') || (has(self.volume) && self.uri.startsWith('file://' + "
                "(self.volume.mountPath.endsWith('/') ? self.volume.mountPath : self.volume.mountPath + '/')))",
                OUTSIDE_VOLUME,
                ".uri",
            ),
            cel(f"!self.uri.startsWith('file://') || !self.uri.matches('{_FILE_ESCAPE}')", ESCAPES_VOLUME, ".uri"),
        )
    )

    uri: str = Field(
        description="file:///path, http(s)://host/path or s3://bucket/key.",
        pattern=_SOURCE_SCHEMES,
        max_length=2048,
    )
    format: DataFormat = Field(default="csv", description="File format of the data.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret with credentials for the source. For s3:// it holds AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN / AWS_ENDPOINT_URL."
        ),
    )
    volume: VolumeSource | None = Field(
        default=None, description="Volume to mount for file:// sources."
    )

    @model_validator(mode="after")
    def _file_inside_volume(self) -> DataSource:
        if not self.uri.startswith("file://"):
            return self
        mount = self.volume.mount_path if self.volume is not None else None
        if mount is None or not self.uri.startswith("file://" + mount.rstrip("/") + "/"):
            raise ValueError(f"{OUTSIDE_VOLUME} (uri {self.uri!r}, mountPath {mount!r})")
        if re.search(_FILE_ESCAPE, self.uri):
            raise ValueError(ESCAPES_VOLUME)
        return self


class ColumnSpec(ApiModel):
    """One expected column."""

    name: str = Field(description="Column name as it appears in the data.", min_length=1, max_length=256)
    type: ColumnType = Field(description="Expected logical type.")
    nullable: bool = Field(default=True, description="Whether missing values are allowed.")
    allowed_values: list[str | int | float | bool] | None = Field(
        default=None,
        description="If set, every non-missing value must be one of these.",
        max_length=1000,
    )
    sensitive: bool = Field(
        default=False,
        description=(
            "Keep only counts for this column in status.profile and in error messages: no values, "
            "no mean or extremes."
        ),
    )


class DataSchema(ApiModel):
    """The expected shape of the data."""

    columns: list[ColumnSpec] = Field(
        default_factory=list,
        description="Expected columns; extra columns in the data are allowed.",
        max_length=500,
        # list-type map: the API server itself rejects duplicate names (cheaper than CEL).
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    target: str | None = Field(
        default=None, description="Name of the label column used for training.", max_length=256
    )

    @model_validator(mode="after")
    def _unique_and_target(self) -> DataSchema:
        names = [c.name for c in self.columns]
        if len(names) != len(set(names)):
            raise ValueError("column names must be unique")
        if self.target and self.columns and self.target not in names:
            raise ValueError(f"target {self.target!r} is not among the declared columns")
        return self


class ValidationRules(ApiModel):
    """Data quality rules checked by every profiling run."""

    min_rows: int | None = Field(default=None, ge=0, description="Fewest rows accepted.")
    max_missing_fraction: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest fraction of missing values accepted in any one column.",
    )


class DatasetSpec(ApiModel):
    """Desired state of a Dataset."""

    source: DataSource = Field(description="Where the data lives.")
    data_schema: DataSchema | None = Field(
        default=None, alias="schema", description="Expected columns and the target column."
    )
    validation: ValidationRules | None = Field(default=None, description="Quality rules.")
    refresh_interval: str | None = Field(
        default=None,
        pattern=DURATION,
        max_length=32,
        description="Re-profile the source this often (e.g. 1h); a content change records a new version.",
    )
    profiler_image: str | None = Field(
        default=None,
        max_length=512,
        description="Override the runtime image used for the profiling Job.",
    )


class DatasetVersion(ApiModel):
    """One entry of the version history."""

    version: str = Field(description="sha256 content digest, `sha256:<hex>`.")
    rows: int | None = Field(default=None, ge=0, description="Row count of this version.")
    observed_at: str | None = Field(default=None, description="When this version was first seen.")


class DatasetStatus(BaseStatus):
    """Observed state of a Dataset."""

    version: str | None = Field(default=None, description="Current content version (sha256:<hex>).")
    rows: int | None = Field(default=None, ge=0, description="Row count of the current version.")
    columns: int | None = Field(default=None, ge=0, description="Column count of the current version.")
    profile: dict[str, Any] | None = Field(
        default=None,
        description="Compact per-column profile of the current version.",
        json_schema_extra=schema_extra(preserve_unknown=True),
    )
    versions: list[DatasetVersion] | None = Field(
        default=None, description="Bounded history of versions, newest last."
    )
    job_name: str | None = Field(default=None, description="Name of the last profiling Job.")
    last_checked: str | None = Field(default=None, description="When the source was last profiled.")
    refresh_count: int | None = Field(
        default=None, ge=0, description="Number of scheduled re-profiles started so far."
    )
    source_revision: str | None = Field(
        default=None,
        description="resourceVersion of the source ConfigMap the last profile read; an edit re-profiles at once.",
    )


VALID_PHASES = ("Pending", "Validating", "Ready", "Invalid", "Failed")

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Version", "type": "string", "jsonPath": ".status.version", "description": "content digest"},
    {"name": "Rows", "type": "integer", "jsonPath": ".status.rows"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

__all__ = ["DNS_LABEL", "VALID_PHASES", "DatasetSpec", "DatasetStatus"]
