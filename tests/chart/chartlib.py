"""Rendering the chart with the real Helm engine (helm-python-sdk) for the chart tests."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dockyard"
RELEASE = "dockyard"
NAMESPACE = "dockyard"

# The values combinations the tests render: defaults plus the important switches.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-mlflow": {
        "mlflow": {
            "external": {
                "uri": "https://mlflow.example.com",
                "podUri": "http://mlflow.mlflow.svc.cluster.local:5000",
                "credentialsSecret": "mlflow-credentials",
                "caConfigMap": "mlflow-ca",
            }
        }
    },
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "service-monitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "servingPodMonitor": {"enabled": True},
        }
    },
    "all-routers": {"routers": {"gateway": True, "istio": True, "seldon": True}},
    "namespaced-all-routers": {
        "watch": {"namespaces": ["team-a"]},
        "routers": {"gateway": True, "istio": True, "seldon": True},
        "metrics": {"servingPodMonitor": {"enabled": True}},
    },
    "everything-else": {
        "fullnameOverride": "dy",
        "leaderElection": {"enabled": False},
        "operator": {
            "logFormat": "json",
            "verbose": True,
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/a": "b"},
        },
        "images": {
            "pullSecrets": ["regcred"],
            "operator": {
                "repository": "registry.example.com/dockyard-operator",
                "digest": "sha256:" + "a" * 64,
            },
        },
        "serviceAccount": {"name": "custom-operator", "annotations": {"example.com/role": "x"}},
        "workloadServiceAccount": {"name": "ml-workloads"},
        "mlflow": {
            "backendStoreUri": "postgresql://mlflow@postgres:5432/mlflow",
            "artifactsDestination": "s3://bucket/mlflow",
            "envFromSecret": "mlflow-env",
            "allowedHosts": ["mlflow.example.com"],
            "extraArgs": ["--gunicorn-opts=--timeout=120"],
            "persistence": {"existingClaim": "mlflow-data"},
            "auth": {"existingSecret": "mlflow-admins", "defaultPermission": "NO_PERMISSIONS"},
        },
        "metrics": {"service": {"enabled": False}, "grafanaDashboard": {"enabled": False}},
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.lru_cache(maxsize=64)
def _render_cached(values_json: str, namespace: str, release: str) -> tuple[tuple[str, str], ...]:
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(json.loads(values_json), name=release, namespace=namespace, is_install=True)
    return tuple(sorted(rendered.items()))


def render_files(
    values: dict[str, Any] | None = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> dict[str, str]:
    """template path -> rendered text (raises helm_python.HelmError on failure)."""
    return dict(_render_cached(json.dumps(values or {}, sort_keys=True), namespace, release))


def render(
    values: dict[str, Any] | None = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> list[dict[str, Any]]:
    """Every object the templates render (NOTES.txt excluded), as dicts (fresh copies)."""
    objects = []
    for path, text in render_files(values, namespace, release).items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def chart_crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def load_hack_module(filename: str) -> Any:
    """Import a hack/ script (its file name has a dash) as a module."""
    path = ROOT / "hack" / filename
    name = "hack_" + path.stem.replace("-", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
