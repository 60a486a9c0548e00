"""The Helm chart, installed for real: its rendered objects apply to kube-apiserver and run.

For the default values and for the namespaced scope (``watch.namespaces``), the chart is
rendered by the Helm engine and applied (CRDs first, as Helm does) into a namespace that
enforces Pod Security ``restricted``; then the operator Deployment (in the cluster, under the
chart's ServiceAccount, with a projected token) and the embedded MLflow Deployment (on a
PersistentVolumeClaim the local provisioner binds) must roll out, and that MLflow must refuse
anonymous requests and accept the admin password the chart generated. Everything but the CRDs
is removed afterwards.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from tests.localcluster.demo import Kubectl, install_chart
from tests.plugins.kube import KubeEnv

pytestmark = pytest.mark.integration


@pytest.fixture
def kubectl(kube: KubeEnv) -> Kubectl:
    if kube.cluster.local is None:
        pytest.skip("runs the chart's Pods: needs the local control plane")
    return Kubectl(str(kube.kubeconfig), kube.cluster.local.bin_dir)


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_chart_installs_and_its_deployments_roll_out(kube: KubeEnv, kubectl: Kubectl, scope: str) -> None:
    release = f"dy{scope[:2]}"
    values: dict[str, Any] = {"watch": {"namespaces": [kube.namespace]}} if scope == "namespaced" else {}
    objects: list[dict[str, Any]] = []
    try:
        objects = install_chart(kubectl, kube.namespace, release=release, values=values, timeout="300s")
        kinds = {o["kind"] for o in objects}
        assert {"ServiceAccount", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds
        for dep in ("operator", "mlflow"):
            d = kube.get("Deployment", f"{release}-{dep}")
            assert d is not None and d["status"].get("readyReplicas") == 1, d and d["status"]
        pvc = kube.get("PersistentVolumeClaim", f"{release}-mlflow")
        assert pvc is not None and pvc["status"]["phase"] == "Bound"
        # The in-cluster operator reached the apiserver through the `kubernetes` Service with its
        # projected token, and MLflow through its Service: kopf's liveness probe says so.
        pods = kube.list("Pod", label_selector="app.kubernetes.io/component=operator")
        assert pods and all(p["status"]["phase"] == "Running" for p in pods)
        # Default values: the registry wants a login; the generated admin password opens it.
        (mlflow_pod,) = kube.list("Pod", label_selector="app.kubernetes.io/component=mlflow")
        url = f"http://{mlflow_pod['status']['podIP']}:5000/api/2.0/mlflow/registered-models/search"
        secret = kube.get("Secret", f"{release}-mlflow-auth")
        assert secret is not None
        password = base64.b64decode(secret["data"]["admin-password"]).decode()
        assert requests.get(url, timeout=30).status_code == 401
        assert requests.get(url, auth=("admin", password), timeout=30).status_code == 200
    finally:
        cluster_scoped = [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        for obj in cluster_scoped:
            kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found", "--wait=false")
