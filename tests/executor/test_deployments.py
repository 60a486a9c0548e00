"""The local executor as Deployment controller: marked available, or really run on a free port."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from tests.plugins.kube import KubeEnv, has_condition

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _emulator_only(kube: KubeEnv) -> None:
    kube.require_emulator("these tests test the local executor itself")


PY = Path(sys.executable).name


def deployment(name: str, container: dict, replicas: int = 1) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def available(replicas: int, generation: int):
    def check(d: dict) -> bool:
        st = d.get("status") or {}
        return (
            st.get("observedGeneration") == generation
            and (st.get("readyReplicas") or 0) == replicas
            and (st.get("availableReplicas") or 0) == replicas
            and has_condition(d, "Available")
        )

    return check


def test_deployment_marked_available_and_remarked_on_spec_change(kube: KubeEnv, executor) -> None:
    kube.create(deployment("web", {"name": "web", "image": "nginx:1.27"}, replicas=2))
    d = kube.wait_for_object("Deployment", "web", available(2, 1))
    assert d["status"]["replicas"] == d["status"]["updatedReplicas"] == 2
    assert has_condition(d, "Progressing")

    kube.patch("Deployment", "web", {"spec": {"replicas": 3}})
    d = kube.wait_for_object("Deployment", "web", available(3, 2))
    assert d["metadata"]["generation"] == 2

    kube.patch(
        "Deployment", "web", {"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}}
    )
    kube.wait_for_object("Deployment", "web", available(3, 3))


def test_process_mode_deployment_serves_becomes_ready_and_dies_on_delete(
    kube: KubeEnv, tmp_path: Path
) -> None:
    ex = kube.start_executor(run_deployments=lambda d: d["metadata"]["name"] == "srv")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    container = {
        "name": "srv",
        "image": "python:3.12",
        "command": [PY, "-m", "http.server", "--bind", "127.0.0.1", "--directory", "/www"],
        "args": ["8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
    }
    d = deployment("srv", container)
    d["spec"]["template"]["spec"]["volumes"] = [
        {"name": "www", "persistentVolumeClaim": {"claimName": "site"}}
    ]
    ex.host_path_map["site"] = tmp_path / "www"
    kube.create(d)
    kube.create(deployment("other", {"name": "o", "image": "x", "command": ["false"]}))

    kube.wait_for_object("Deployment", "srv", available(1, 1), timeout=30)
    ports = ex.deployment_ports(kube.namespace, "srv")
    assert set(ports) == {8080} and ports[8080] != 8080
    url = f"http://127.0.0.1:{ports[8080]}/health"
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.read() == b"ok"
    kube.wait_for_object("Deployment", "other", available(1, 1))  # not run: just marked

    kube.delete("Deployment", "srv")
    kube.wait_for(lambda: not _serving(url), timeout=15, message="server killed")
    assert "GET /health" in ex.deployment_logs(kube.namespace, "srv")


def test_process_mode_deployment_not_ready_until_probe_passes(kube: KubeEnv, tmp_path: Path) -> None:
    ex = kube.start_executor(run_deployments=True, readiness_timeout=60)
    container = {
        "name": "srv",
        "image": "python:3.12",
        "command": [PY, "-m", "http.server", "--bind", "127.0.0.1", "--directory", "/site"],
        "args": ["9000"],
        "ports": [{"containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 9000}},
        "volumeMounts": [{"name": "site", "mountPath": "/site"}],
    }
    d = deployment("gated", container)
    d["spec"]["template"]["spec"]["volumes"] = [
        {"name": "site", "persistentVolumeClaim": {"claimName": "gate"}}
    ]
    site = tmp_path / "gate"
    site.mkdir()
    ex.host_path_map["gate"] = site
    kube.create(d)

    port = kube.wait_for(
        lambda: ex.deployment_ports(kube.namespace, "gated") if _has(ex, kube, "gated") else None
    )[9000]
    kube.wait_for(lambda: _serving(f"http://127.0.0.1:{port}/"), message="server up")
    dep = kube.wait_for_object(
        "Deployment", "gated", lambda d: (d.get("status") or {}).get("observedGeneration") == 1
    )
    assert not (dep["status"].get("readyReplicas") or 0)
    assert has_condition(dep, "Available", "False")

    (site / "ready").write_text("yes")
    kube.wait_for_object("Deployment", "gated", available(1, 1))


def _has(ex, kube: KubeEnv, name: str) -> bool:
    try:
        ex.deployment_ports(kube.namespace, name)
    except KeyError:
        return False
    return True


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except OSError:
        return False
