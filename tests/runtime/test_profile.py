"""`dockyard profile`: schema checks, rules, profile, truncation, and the entrypoint contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from dockyard.api.dataset import DatasetSpec
from dockyard.runtime import profile as prof
from dockyard.runtime.common import TERMINATION_LIMIT

from .helpers import REPO, run_dockyard, write_iris_csv

EXAMPLE = REPO / "manifests" / "examples" / "01-dataset.yaml"


def example_spec(**changes: Any) -> dict[str, Any]:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec.update(changes)
    return spec


def spec_of(columns: list[dict[str, Any]], **rules: Any) -> DatasetSpec:
    wire: dict[str, Any] = {"source": {"uri": "s3://bucket/x.csv"}, "schema": {"columns": columns}}
    if rules:
        wire["validation"] = rules
    return DatasetSpec.model_validate(wire)


def errors_for(frame: pd.DataFrame, spec: DatasetSpec, fmt: str = "csv") -> tuple[str | None, list[str]]:
    return prof.validate(frame, spec, fmt)


# ----------------------------------------------------------------------------- schema


def test_iris_example_schema_is_valid(tmp_path: Path) -> None:
    write_iris_csv(tmp_path / "iris.csv")
    frame = pd.read_csv(tmp_path / "iris.csv")
    assert errors_for(frame, DatasetSpec.model_validate(example_spec())) == (None, [])


def test_missing_column() -> None:
    frame = pd.DataFrame({"a": [1]})
    reason, errors = errors_for(
        frame, spec_of([{"name": "a", "type": "integer"}, {"name": "b", "type": "float"}])
    )
    assert reason == "SchemaViolation"
    assert errors == ["column 'b' is missing"]


@pytest.mark.parametrize(
    ("values", "declared", "ok"),
    [
        ([1, 2], "integer", True),
        ([1.0, None], "integer", True),  # NaN forces float; still whole numbers
        ([1.5, 2.0], "integer", False),
        ([1, 2], "float", True),
        (["a", "b"], "float", False),
        ([True, False], "boolean", True),
        ([0, 1], "boolean", True),
        ([0, 2], "boolean", False),
        (["x", "y"], "string", True),
        ([1, 2], "string", True),  # CSV cannot tell "1" from 1
    ],
)
def test_type_compatibility(values: list[Any], declared: str, ok: bool) -> None:
    frame = pd.DataFrame({"c": values})
    _, errors = errors_for(frame, spec_of([{"name": "c", "type": declared}]))
    assert (errors == []) is ok, errors


def test_string_in_parquet_must_be_text() -> None:
    frame = pd.DataFrame({"c": [1, 2]})
    _, errors = errors_for(frame, spec_of([{"name": "c", "type": "string"}]), fmt="parquet")
    assert errors and "expected string" in errors[0]


def test_nullability() -> None:
    frame = pd.DataFrame({"c": [1.0, None, None]})
    _, errors = errors_for(frame, spec_of([{"name": "c", "type": "float", "nullable": False}]))
    assert errors == ["column 'c': 2 missing value(s) but nullable is false"]
    assert errors_for(frame, spec_of([{"name": "c", "type": "float"}])) == (None, [])


def test_allowed_values() -> None:
    frame = pd.DataFrame({"s": ["a", "b", "zz", None, "yy"], "n": [1, 2, 3, 1, 2]})
    spec = spec_of(
        [
            {"name": "s", "type": "string", "allowedValues": ["a", "b"]},
            {"name": "n", "type": "integer", "allowedValues": [1, 2, 3]},
        ]
    )
    reason, errors = errors_for(frame, spec)
    assert reason == "SchemaViolation"
    assert len(errors) == 1 and "'s'" in errors[0] and "zz" in errors[0] and "yy" in errors[0]


def test_allowed_values_mixed_representations() -> None:
    frame = pd.DataFrame({"n": [1, 2], "b": [True, False]})
    spec = spec_of(
        [
            {"name": "n", "type": "integer", "allowedValues": ["1", "2"]},
            {"name": "b", "type": "boolean", "allowedValues": ["true", "false"]},
        ]
    )
    assert errors_for(frame, spec) == (None, [])


def test_target_missing() -> None:
    spec = DatasetSpec.model_validate({"source": {"uri": "s3://bucket/x.csv"}, "schema": {"target": "label"}})
    _, errors = errors_for(pd.DataFrame({"a": [1]}), spec)
    assert errors == ["target column 'label' is missing"]


# ----------------------------------------------------------------------------- rules


def test_min_rows() -> None:
    spec = DatasetSpec.model_validate({"source": {"uri": "s3://bucket/x.csv"}, "validation": {"minRows": 5}})
    reason, errors = errors_for(pd.DataFrame({"a": [1, 2]}), spec)
    assert reason == "QualityRuleViolation"
    assert errors == ["2 rows, fewer than minRows 5"]


def test_max_missing_fraction() -> None:
    spec = DatasetSpec.model_validate(
        {"source": {"uri": "s3://bucket/x.csv"}, "validation": {"maxMissingFraction": 0.25}}
    )
    frame = pd.DataFrame({"ok": [1, 2, 3, 4], "bad": [1, None, None, 4]})
    reason, errors = errors_for(frame, spec)
    assert reason == "QualityRuleViolation"
    assert len(errors) == 1 and "'bad'" in errors[0] and "0.5" in errors[0]


def test_schema_violation_wins_over_rules() -> None:
    spec = spec_of([{"name": "zz", "type": "float"}], minRows=10)
    reason, errors = errors_for(pd.DataFrame({"a": [1]}), spec)
    assert reason == "SchemaViolation"
    assert len(errors) == 2


# ----------------------------------------------------------------------------- profile


def test_profile_numbers_and_strings() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "s": ["a", "a", "b", None], "i": [1, 2, 3, 4]})
    p = prof.build_profile(frame)
    assert p["x"] == {
        "type": "float",
        "missingFraction": 0.25,
        "mean": 2,
        "std": 0.816497,
        "min": 1,
        "max": 3,
    }
    # No top values: "a" and "b" are each seen in fewer than TOP_MIN_COUNT rows.
    assert p["s"] == {"type": "string", "missingFraction": 0.25, "distinct": 2}
    assert p["i"]["type"] == "integer" and p["i"]["mean"] == 2.5
    json.dumps(p, allow_nan=False)


def test_profile_all_missing_and_inf_are_json_safe() -> None:
    frame = pd.DataFrame({"x": [np.nan, np.nan], "y": [np.inf, 1.0]})
    text = prof.render(prof.Result(ok=True, profile=prof.build_profile(frame)))
    assert json.loads(text)["profile"]["x"]["missingFraction"] == 1


def test_wide_dataset_is_truncated_under_limit() -> None:
    rng = np.random.default_rng(0)
    cols: dict[str, Any] = {f"num_{i:03d}": rng.normal(size=50) for i in range(150)}
    cols.update({f"text_{i:03d}": [f"value-{j % 5}-{'x' * 30}" for j in range(50)] for i in range(150)})
    frame = pd.DataFrame(cols)
    result = prof.Result(
        ok=True, version="sha256:" + "0" * 64, rows=50, columns=300, profile=prof.build_profile(frame)
    )
    text = prof.render(result, priority=["text_149", "num_000"])
    assert len(text.encode()) < TERMINATION_LIMIT
    out = json.loads(text)
    assert out["profileTruncated"] is True
    assert out["columns"] == 300 and out["rows"] == 50
    assert 0 < len(out["profile"]) < 300
    # Top values are dropped before any column is.
    assert all("top" not in v for v in out["profile"].values())
    # Priority (declared) columns are kept longest.
    assert "text_149" in out["profile"] and "num_000" in out["profile"]


def test_moderate_dataset_drops_top_values_only() -> None:
    frame = pd.DataFrame({f"t{i}": [f"{'v' * 35}{j % 5}" for j in range(50)] for i in range(16)})
    result = prof.Result(ok=True, rows=50, columns=16, profile=prof.build_profile(frame))
    full = len(prof.dumps(result.to_json()))
    assert full > TERMINATION_LIMIT
    out = json.loads(prof.render(result))
    assert out["profileTruncated"] is True
    assert len(out["profile"]) == 16  # every column kept, only top values cut
    assert sum("top" in v for v in out["profile"].values()) < 16


def test_small_profile_not_truncated() -> None:
    out = json.loads(prof.render(prof.Result(ok=True, profile={"a": {"type": "float"}})))
    assert out["profileTruncated"] is False


def test_errors_are_bounded() -> None:
    errors = prof.bound_errors([f"error {i} " + "z" * 500 for i in range(50)])
    assert len(errors) == prof.MAX_ERRORS + 1
    assert all(len(e) <= prof.MAX_ERROR_LEN for e in errors)
    assert errors[-1] == "... and 40 more"


def test_huge_column_names_still_fit() -> None:
    frame = pd.DataFrame({("c" * 5000) + str(i): [1, 2] for i in range(3)})
    result = prof.Result(
        ok=False, reason="SchemaViolation", errors=["e" * 199] * 11, profile=prof.build_profile(frame)
    )
    text = prof.render(result)
    assert len(text.encode()) < TERMINATION_LIMIT


# ----------------------------------------------------------------------------- entrypoint


def run_profile(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    term = tmp_path / "termination-log"
    proc = run_dockyard("profile", *args, env={"DOCKYARD_TERMINATION_LOG": str(term), **env}, timeout=120)
    raw = term.read_text()
    assert len(raw.encode()) < TERMINATION_LIMIT
    return proc.returncode, json.loads(raw), proc.stderr


def test_entrypoint_valid_iris(tmp_path: Path) -> None:
    version = write_iris_csv(tmp_path / "iris.csv")
    env = {
        "DOCKYARD_DATASET_NAME": "iris",
        "DOCKYARD_DATASET_URI": (tmp_path / "iris.csv").as_uri(),
        "DOCKYARD_DATASET_FORMAT": "csv",
        "DOCKYARD_DATASET_SPEC": json.dumps(example_spec()),
    }
    code, out, stderr = run_profile(tmp_path, env)
    assert code == 0, stderr
    assert out["ok"] is True and out["reason"] is None and out["errors"] == []
    assert out["version"] == version
    assert out["rows"] == 150 and out["columns"] == 5
    assert out["profileTruncated"] is False
    assert out["profile"]["species"]["distinct"] == 3
    assert out["profile"]["petal_length"]["min"] == 1 and out["profile"]["petal_length"]["max"] == 6.9
    assert set(out) == {"ok", "version", "rows", "columns", "profile", "profileTruncated", "reason", "errors"}
    assert "is valid" in stderr


def test_entrypoint_schema_violation_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "iris.csv"
    write_iris_csv(data)
    text = data.read_text().replace("setosa", "setosaa", 1)
    data.write_text(text)
    env = {"DOCKYARD_DATASET_URI": data.as_uri(), "DOCKYARD_DATASET_SPEC": json.dumps(example_spec())}
    code, out, stderr = run_profile(tmp_path, env)
    assert code == 1
    assert out["ok"] is False and out["reason"] == "SchemaViolation"
    assert "setosaa" in out["errors"][0]
    assert out["version"].startswith("sha256:") and out["rows"] == 150
    assert "SchemaViolation" in stderr


def test_entrypoint_quality_rule_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "iris.csv"
    write_iris_csv(data)
    lines = data.read_text().splitlines()
    lines[1] = ",3.5,1.4,0.2,setosa"  # one missing sepal_length
    data.write_text("\n".join(lines) + "\n")
    spec = example_spec()
    spec["schema"]["columns"][0]["nullable"] = True
    env = {"DOCKYARD_DATASET_URI": data.as_uri(), "DOCKYARD_DATASET_SPEC": json.dumps(spec)}
    code, out, _ = run_profile(tmp_path, env)
    assert code == 1
    assert out["reason"] == "QualityRuleViolation"
    assert "sepal_length" in out["errors"][0]


def test_entrypoint_unreachable_exit_2(tmp_path: Path) -> None:
    env = {"DOCKYARD_DATASET_URI": (tmp_path / "absent.csv").as_uri(), "DOCKYARD_DATASET_FORMAT": "csv"}
    code, out, stderr = run_profile(tmp_path, env)
    assert code == 2
    assert out["ok"] is False and out["reason"] == "SourceUnreachable" and out["version"] is None
    assert "SourceUnreachable" in stderr


def test_entrypoint_unreadable_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "x.parquet"
    data.write_bytes(b"definitely not parquet")
    code, out, _ = run_profile(
        tmp_path, {"DOCKYARD_DATASET_URI": data.as_uri(), "DOCKYARD_DATASET_FORMAT": "parquet"}
    )
    assert code == 2
    assert out["reason"] == "UnreadableData"
    assert out["version"] == prof.content_version(b"definitely not parquet")


def test_cli_flags_override_env(tmp_path: Path) -> None:
    write_iris_csv(tmp_path / "iris.csv")
    env = {"DOCKYARD_DATASET_URI": (tmp_path / "absent.csv").as_uri()}
    code, out, _ = run_profile(tmp_path, env, "--uri", (tmp_path / "iris.csv").as_uri(), "--format", "csv")
    assert code == 0 and out["rows"] == 150


def test_invalid_spec_json(tmp_path: Path) -> None:
    write_iris_csv(tmp_path / "iris.csv")
    env = {
        "DOCKYARD_DATASET_URI": (tmp_path / "iris.csv").as_uri(),
        "DOCKYARD_DATASET_SPEC": '{"source": {"uri": "nope"}}',
    }
    code, out, _ = run_profile(tmp_path, env)
    assert code == 2 and out["reason"] == "InvalidSpec"


# ----------------------------------------------------------------------------- raw values


def profile_of_people(tmp_path: Path, columns: list[dict[str, Any]], diagnoses: list[str]) -> dict[str, Any]:
    """`dockyard profile` (in process) over 200 people with the declared ``columns``."""
    n = len(diagnoses)
    pd.DataFrame(
        {
            "email": [f"user{i}@example.com" for i in range(n)],
            "diagnosis": diagnoses,
            "salary": [30_000 + 17 * i for i in range(n)],
            "plan": ["free", "pro"] * (n // 2),
        }
    ).to_csv(tmp_path / "people.csv", index=False)
    spec = {"source": {"uri": "s3://bucket/people.csv"}, "schema": {"columns": columns}}
    args = prof.parse_args(["--uri", (tmp_path / "people.csv").as_uri(), "--spec", json.dumps(spec)])
    result, _, _ = prof.run(args, {})
    return result.to_json()


SENSITIVE = [
    {"name": "diagnosis", "type": "string", "sensitive": True},
    {"name": "salary", "type": "integer", "sensitive": True},
]


def test_profile_shows_raw_values_only_of_frequent_values_of_open_low_cardinality_columns(
    tmp_path: Path,
) -> None:
    out = profile_of_people(tmp_path, SENSITIVE, ["flu", "cold", "asthma", "none"] * 50)
    profile = out["profile"]
    text = json.dumps(profile)
    assert "example.com" not in text  # 200 distinct e-mails: high cardinality
    assert not {"flu", "cold", "asthma"} & set(re.findall(r"\w+", text))  # sensitive
    assert "30000" not in text and "min" not in profile["salary"]  # sensitive number: no extremes
    assert profile["plan"]["top"] == {"free": 100, "pro": 100}
    # Counts stay for every column.
    assert profile["email"]["distinct"] == 200 and profile["diagnosis"]["distinct"] == 4
    assert profile["salary"]["missingFraction"] == 0


def test_errors_name_no_value_of_a_sensitive_column(tmp_path: Path) -> None:
    columns = [{**SENSITIVE[0], "allowedValues": ["flu", "cold"]}]
    out = profile_of_people(tmp_path, columns, ["flu"] * 199 + ["hiv"])
    assert out["reason"] == "SchemaViolation"
    assert "hiv" not in json.dumps(out)
    assert "diagnosis" in out["errors"][0]
