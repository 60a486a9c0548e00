"""The Grafana dashboard uses exactly the operator's metric names and MLServer's real ones."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from .chartlib import CHART, ROOT, SCENARIOS, find, one, render

# The operator's metrics contract (issue 6).
OPERATOR_METRICS = {
    "dockyard_reconcile_total": "counter",
    "dockyard_reconcile_duration_seconds": "histogram",
    "dockyard_resources": "gauge",
    "dockyard_training_duration_seconds": "histogram",
    "dockyard_model_versions_registered_total": "counter",
    "dockyard_mlflow_request_errors_total": "counter",
    "dockyard_variant_weight": "gauge",
    "dockyard_rollout_phase": "gauge",
    "dockyard_rollout_step": "gauge",
    "dockyard_rollout_candidate_weight_percent": "gauge",
    "dockyard_rollout_analysis_total": "counter",
    "dockyard_drift_score": "gauge",
    "dockyard_drift_detected": "gauge",
    "dockyard_dataset_drift": "gauge",
    "dockyard_drift_evaluations_total": "counter",
    "dockyard_drift_evaluation_duration_seconds": "histogram",
}
# What serving Pods count for drift monitoring (dockyard.runtime.monitor_counts).
SERVING_MONITOR_METRICS = {
    "dockyard_monitor_feature_values_total": "counter",
    "dockyard_monitor_feature_anomalies_total": "counter",
    "dockyard_monitor_predictions_total": "counter",
    "dockyard_monitor_requests_total": "counter",
}
SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
DASHBOARD = json.loads((CHART / "dashboards" / "dockyard.json").read_text())


def exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def series_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:dockyard|model_infer)_[a-z_]+)\b", expr))


def mlserver_metrics() -> dict[str, str]:
    """name -> type of the Prometheus metrics MLServer's data plane defines (read from its source)."""
    spec = importlib.util.find_spec("mlserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mlserver is not installed")
    source = Path(list(spec.submodule_search_locations)[0]) / "handlers" / "dataplane.py"
    found = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
            "Counter",
            "Summary",
            "Histogram",
            "Gauge",
        ):
            name = node.args[0].value
            labels = [e.value for e in node.args[2].elts] if len(node.args) > 2 else []
            assert labels == ["model", "version"], (name, labels)
            found[name] = node.func.id.lower()
    return found


def allowed_series() -> set[str]:
    allowed = set()
    for name, kind in {**OPERATOR_METRICS, **SERVING_MONITOR_METRICS, **mlserver_metrics()}.items():
        base = name
        if kind == "counter" and not name.endswith("_total"):
            allowed.add(name + "_total")  # prometheus-client appends _total to counters
        for suffix in SUFFIXES[kind]:
            allowed.add(base + suffix)
    return allowed


def test_dashboard_uses_only_real_series() -> None:
    allowed = allowed_series()
    used = set().union(*(series_names(e) for e in exprs()))
    assert used and used <= allowed, used - allowed


def test_every_operator_metric_has_a_panel() -> None:
    used = set().union(*(series_names(e) for e in exprs()))
    for name, kind in OPERATOR_METRICS.items():
        assert any(name + s in used for s in SUFFIXES[kind]), f"{name} has no panel"


def test_per_variant_traffic_comes_from_mlserver() -> None:
    serving = [e for e in exprs() if "model_infer_request_success_total" in e]
    assert serving and all("variant" in e for e in serving)
    assert "model_infer_request_success" in mlserver_metrics()


def test_operator_metric_names_match_the_implementation() -> None:
    """Once the operator defines its metrics, their names are the contract's."""
    defined = set()
    for path in (ROOT / "operator" / "dockyard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None))
                in (
                    "Counter",
                    "Gauge",
                    "Histogram",
                    "Summary",
                )
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                defined.add(node.args[0].value)
    if not defined:
        pytest.skip("the operator defines no Prometheus metrics yet")
    normalized = {n.removesuffix("_total") for n in defined}
    for name in OPERATOR_METRICS:
        assert name.removesuffix("_total") in normalized, f"{name} is not defined by the operator"


def test_dashboard_configmap() -> None:
    cm = one(render(), "ConfigMap", "dockyard-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["dockyard.json"]) == DASHBOARD
    assert DASHBOARD["uid"] and DASHBOARD["title"] == "Dockyard"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert not find(render(SCENARIOS["everything-else"]), "ConfigMap", "dy-grafana-dashboard")


def test_serving_monitor_metric_names_match_the_runtime() -> None:
    from dockyard.runtime import monitor_counts

    defined = {f"{m.name}_total" for m in vars(monitor_counts).values() if isinstance(m, monitor_counts.Metric)}
    assert defined == set(SERVING_MONITOR_METRICS), defined
