"""values.schema.json makes typos and bad values fail at install time."""

from __future__ import annotations

import json

import pytest
import yaml

from .chartlib import CHART, render_files

helm_python = pytest.importorskip("helm_python")
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if "$ref" in schema:  # "#/definitions/<name>": shared shapes such as a NetworkPolicyPeer
        yield from _walk(SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]], path)


def test_every_object_level_of_the_schema_refuses_unknown_keys() -> None:
    free_form = {  # Kubernetes objects passed through verbatim, or string maps
        ".global",
        ".operator.affinity",
        ".mlflow.affinity",
        ".operator.extraEnv[].valueFrom",
    }
    for path, node in _walk(SCHEMA):
        if node.get("type") == "object" and path not in free_form:
            assert "additionalProperties" in node, f"{path or '<root>'} accepts any key"
            if "properties" in node:
                assert node["additionalProperties"] is False, path


def test_schema_describes_exactly_the_keys_of_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: dict, schema: dict, path: str) -> None:
        props = schema.get("properties")
        if props is None:
            return
        assert set(node) <= set(props), f"{path}: {set(node) - set(props)} missing in the schema"
        # Every schema property has a default in values.yaml (documented there).
        assert set(props) - {"global"} <= set(node), f"{path}: {set(props) - set(node)} not in values.yaml"
        for key, value in node.items():
            if isinstance(value, dict):
                keys(value, props[key], f"{path}.{key}")

    keys(values, SCHEMA, "")


def test_chart_defaults_pass_the_schema() -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)


@pytest.mark.parametrize(
    "values, fragment",
    [
        # A typo at any level: one case; test_every_object_level_of_the_schema_refuses_unknown_keys
        # checks that every level refuses unknown keys.
        ({"mlflow": {"external": {"url": "http://mlflow"}}}, "url"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),  # bad enum
        ({"watch": {"namespaces": ["Team_A"]}}, "namespaces"),  # not a DNS label
        ({"watch": {"namespaces": "team-a"}}, "namespaces"),  # wrong type
        ({"metrics": {"port": "8000"}}, "port"),
        ({"mlflow": {"external": {"uri": "mlflow:5000"}}}, "uri"),  # no scheme
        ({"images": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"networkPolicies": {"enabled": "yes"}}, "enabled"),
        ({"networkPolicies": {"prometheus": {"peers": [{"podSelectr": {}}]}}}, "podSelectr"),  # not a peer
    ],
)
def test_render_with_a_bad_value_fails(values: dict, fragment: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as err:
        render_files(values)
    assert fragment in str(err.value)


def test_lint_reports_a_typo() -> None:
    report = helm_python.lint(CHART, {"leaderElection": {"enabeld": False}})
    assert any("enabeld" in e for e in report["errors"])
