"""charts/dockyard/crds/ mirrors crds/, and manifests/install.yaml is the chart rendered."""

from __future__ import annotations

import yaml

from .chartlib import CHART, ROOT, load_hack_module

REGENERATE = "run: .venv/bin/python hack/render-install.py"


def test_chart_crds_are_exact_copies_of_crds_dir() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    extra = {name for name in chart if name not in source}
    assert not extra, f"stale CRDs in the chart: {extra}"
    for name, data in source.items():
        assert chart.get(name) == data, f"charts/dockyard/crds/{name} differs from crds/{name}; {REGENERATE}"
    render_install = load_hack_module("render-install.py")
    assert render_install.crd_drift() == []


def test_install_yaml_is_in_sync_with_the_chart() -> None:
    render_install = load_hack_module("render-install.py")
    current = (ROOT / "manifests" / "install.yaml").read_text()
    assert current == render_install.render_install(), f"manifests/install.yaml is stale; {REGENERATE}"


def test_install_yaml_contents() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "dockyard"
    kinds = [d["kind"] for d in docs]
    crd_names = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {
        "datasets.dockyard.dev",
        "trainingruns.dockyard.dev",
        "modeldeployments.dockyard.dev",
    } == crd_names
    # CRDs and RBAC before the Deployments that need them; CRDs before their objects.
    assert max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition") < kinds.index("ClusterRole")
    assert kinds.index("ClusterRoleBinding") < kinds.index("Deployment")
    for doc in docs:
        if doc["kind"] not in {
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        }:
            assert doc["metadata"]["namespace"] == "dockyard", doc["metadata"]["name"]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {"dockyard-operator", "dockyard-mlflow"}


def test_check_mode_reports_drift(tmp_path, monkeypatch) -> None:
    render_install = load_hack_module("render-install.py")
    assert render_install.main(["--check"]) == 0
    stale = tmp_path / "install.yaml"
    stale.write_text("# stale\n")
    monkeypatch.setattr(render_install, "INSTALL", stale)
    monkeypatch.setattr(render_install, "ROOT", tmp_path)
    assert render_install.main(["--check"]) == 1
