"""DatasetSpec / DatasetStatus: good specs parse, each bad spec names the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from dockyard.api import DatasetSpec, DatasetStatus
from tests.unit import specpath
from tests.unit.specpath import set_path

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "01-dataset.yaml"

GOOD: dict[str, Any] = {
    "source": {
        "uri": "file:///data/iris.csv",
        "format": "csv",
        "volume": {"configMap": {"name": "iris-data"}},
    },
    "schema": {
        "target": "species",
        "columns": [
            {"name": "sepal_length", "type": "float", "nullable": False},
            {"name": "species", "type": "string", "allowedValues": ["setosa", "versicolor"]},
        ],
    },
    "validation": {"minRows": 100, "maxMissingFraction": 0.0},
    "refreshInterval": "10m",
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the dotted `path` set to value (None deletes it)."""
    return set_path(GOOD, path, value)


def error_locs(data: Any) -> list[tuple[Any, ...]]:
    return specpath.error_locs(DatasetSpec, data)


def test_example_parses() -> None:
    spec = DatasetSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    assert spec.source.uri == "file:///data/iris.csv"
    assert spec.source.volume is not None and spec.source.volume.config_map is not None
    assert spec.data_schema is not None and spec.data_schema.target == "species"
    assert spec.validation is not None and spec.validation.min_rows == 100


def test_defaults() -> None:
    spec = DatasetSpec.model_validate(
        {"source": {"uri": "file:///data/x.csv", "volume": {"configMap": {"name": "c"}}}}
    )
    assert spec.source.format == "csv"
    assert spec.source.volume is not None and spec.source.volume.mount_path == "/data"
    assert spec.data_schema is None and spec.validation is None and spec.refresh_interval is None


def test_wire_form_uses_schema_alias() -> None:
    spec = DatasetSpec.model_validate(GOOD)
    wire = spec.to_api()
    assert "schema" in wire and "data_schema" not in wire and "dataSchema" not in wire
    assert wire["schema"]["columns"][1]["allowedValues"] == ["setosa", "versicolor"]
    assert DatasetSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(
            "source", {"uri": "https://example.com/iris.parquet", "format": "parquet"}, id="https-parquet"
        ),
        pytest.param("source", {"uri": "http://10.0.0.1:8080/d.jsonl", "format": "jsonl"}, id="http-jsonl"),
        pytest.param(
            "source", {"uri": "s3://bucket/path/d.csv", "credentialsSecretRef": {"name": "s3"}}, id="s3-creds"
        ),
        pytest.param(
            "source",
            {
                "uri": "file:///mnt/d/x.csv",
                "volume": {"persistentVolumeClaim": {"name": "p"}, "mountPath": "/mnt/d"},
            },
            id="pvc",
        ),
        pytest.param("source.uri", "file:///data/sub/.hidden/x..csv", id="dots-inside-names"),
        pytest.param(
            "source",
            {"uri": "file:///d/.cache/..v/x.csv", "volume": {"configMap": {"name": "c"}, "mountPath": "/d/.cache/..v"}},
            id="mount-dot-names",
        ),
        pytest.param("source.volume.mountPath", "/data/", id="mount-trailing-slash"),
        pytest.param("schema", None, id="no-schema"),
        pytest.param("schema", {"target": "y"}, id="target-without-columns"),
        pytest.param("schema", {"columns": [{"name": "x", "type": "integer"}]}, id="columns-without-target"),
        pytest.param("schema.columns.1.allowedValues", ["a", 1, 2.5, True], id="mixed-allowed-values"),
        pytest.param("schema.columns.0.name", "Sepal Length (cm)", id="column-name-free-text"),
        pytest.param("validation", {"minRows": 0, "maxMissingFraction": 1.0}, id="validation-bounds"),
        pytest.param("refreshInterval", "1h30m", id="compound-duration"),
        pytest.param("profilerImage", "ghcr.io/x/dockyard-runtime:1.0", id="profiler-image"),
    ],
)
def test_accepts(path: str, value: Any) -> None:
    DatasetSpec.model_validate(with_(path, value))


def test_unknown_fields_are_refused() -> None:
    """The API server prunes fields its schema does not know, so no corpus file can carry one;
    the model itself refuses them rather than ignore a misspelt field."""
    assert error_locs(with_("sourceUri", "x")) == [("sourceUri",)]


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(pydantic.ValidationError, match="not among the declared columns"):
        DatasetSpec.model_validate(with_("schema.target", "label"))
    with pytest.raises(pydantic.ValidationError, match="column names must be unique"):
        DatasetSpec.model_validate(with_("schema.columns.1.name", "sepal_length"))
    with pytest.raises(pydantic.ValidationError, match="must lie under source.volume.mountPath"):
        DatasetSpec.model_validate(with_("source.volume.mountPath", "/other"))


def test_status_parses() -> None:
    status = DatasetStatus.model_validate(
        {
            "phase": "Ready",
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Validated"}],
            "version": "sha256:" + "0" * 64,
            "rows": 150,
            "columns": 5,
            "profile": {"species": {"distinct": 3, "missing": 0}, "nested": [1, {"a": None}]},
            "versions": [
                {"version": "sha256:" + "0" * 64, "rows": 150, "observedAt": "2025-01-01T00:00:00Z"}
            ],
            "jobName": "iris-profile-1",
            "refreshCount": 0,
        }
    )
    assert status.rows == 150
    assert status.versions is not None and status.versions[0].observed_at == "2025-01-01T00:00:00Z"
    assert status.to_api()["profile"]["nested"] == [1, {"a": None}]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param({"rows": -1}, ("rows",), id="rows-negative"),
        pytest.param({"versions": [{"rows": 1}]}, ("versions", 0, "version"), id="version-missing"),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "Maybe"}]},
            ("conditions", 0, "status"),
            id="condition-status",
        ),
    ],
)
def test_status_rejects(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        DatasetStatus.model_validate(data)
    assert loc in [tuple(e["loc"]) for e in info.value.errors()]
