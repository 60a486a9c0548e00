"""Shared API types: references, conditions, resources, durations, the wire form."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api import API_VERSION, GROUP, VERSION
from dockyard.api.common import (
    BaseStatus,
    Condition,
    LocalObjectReference,
    ResourceRequirements,
    is_valid_duration,
    parse_duration,
)
from tests.unit.specpath import error_locs


def test_group_and_version() -> None:
    assert (GROUP, VERSION, API_VERSION) == ("dockyard.dev", "v1alpha1", "dockyard.dev/v1alpha1")


@pytest.mark.parametrize("name", ["iris", "iris-data", "a", "a.b-c", "0abc", "x" * 253])
def test_object_reference_accepts(name: str) -> None:
    assert LocalObjectReference.model_validate({"name": name}).name == name


def test_unknown_fields_are_refused() -> None:
    """The API server prunes fields its schema does not know, so no corpus file can carry one;
    the shared types refuse them rather than ignore a misspelt field."""
    assert error_locs(LocalObjectReference, {"name": "a", "namespace": "b"}) == [("namespace",)]
    assert error_locs(ResourceRequirements, {"gpu": 1}) == [("gpu",)]


def test_condition_parses_and_round_trips() -> None:
    wire = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "variant names must be unique",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    cond = Condition.model_validate(wire)
    assert cond.last_transition_time == "2025-01-01T00:00:00Z"
    assert cond.to_api() == wire


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param({"type": "Ready", "status": "Yes"}, ("status",), id="status-not-enum"),
        pytest.param({"type": "Ready", "status": True}, ("status",), id="status-bool"),
        pytest.param({"status": "True"}, ("type",), id="type-missing"),
        pytest.param(
            {"type": "Ready", "status": "True", "observedGeneration": -1},
            ("observedGeneration",),
            id="generation-negative",
        ),
        pytest.param(
            {"type": "Ready", "status": "True", "last_transition_time": 1, "extra": 1},
            ("extra",),
            id="unknown-field",
        ),
    ],
)
def test_condition_errors(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert loc in error_locs(Condition, data)


def test_base_status_wire_form_is_camel_case_without_nulls() -> None:
    status = BaseStatus(phase="Ready", observed_generation=2)
    assert status.to_api() == {"phase": "Ready", "observedGeneration": 2}
    assert BaseStatus.model_validate({"observedGeneration": 2}).observed_generation == 2
    assert BaseStatus.model_validate({}).to_api() == {}


# ----------------------------------------------------------------------------------------------
# Resources


@pytest.mark.parametrize("quantity", ["1", "500m", "0.5", "1.5", "1Gi", "512Mi", "2G", "100k", "1Ti", "3Ei"])
def test_quantity_accepts(quantity: str) -> None:
    assert ResourceRequirements.model_validate({"requests": {"cpu": quantity}}).requests == {"cpu": quantity}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({}, {}, id="empty"),
        pytest.param({"gpus": 0}, {}, id="zero-gpus-adds-nothing"),
        pytest.param({"gpus": 2}, {"limits": {"nvidia.com/gpu": "2"}}, id="gpus-only"),
        pytest.param(
            {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}, "gpus": 1},
            {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}},
            id="gpus-merged-into-limits",
        ),
        pytest.param(
            {"limits": {"nvidia.com/gpu": "4"}, "gpus": 1},
            {"limits": {"nvidia.com/gpu": "1"}},
            id="gpus-field-wins",
        ),
        pytest.param({"requests": {"cpu": "250m"}}, {"requests": {"cpu": "250m"}}, id="requests-only"),
    ],
)
def test_to_container_resources(data: dict[str, Any], expected: dict[str, Any]) -> None:
    res = ResourceRequirements.model_validate(data)
    assert res.to_container_resources() == expected


def test_to_container_resources_does_not_mutate_the_model() -> None:
    res = ResourceRequirements.model_validate({"limits": {"memory": "1Gi"}, "gpus": 1})
    out = res.to_container_resources()
    out["limits"]["cpu"] = "9"
    assert res.limits == {"memory": "1Gi"}
    assert res.to_container_resources() == {"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}}


# ----------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h1m1s", 3661),
        ("0s", 0),
        ("30m1h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert is_valid_duration(text)
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("10", id="no-unit"),
        pytest.param("1d", id="days"),
        pytest.param("1.5h", id="fraction"),
        pytest.param("-1s", id="negative"),
        pytest.param("1H", id="uppercase-unit"),
        pytest.param("h", id="unit-only"),
        pytest.param("1h ", id="trailing-space"),
        pytest.param("10m\n", id="trailing-newline"),
        pytest.param("1ms", id="milliseconds"),
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    assert not is_valid_duration(text)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
