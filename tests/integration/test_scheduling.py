"""TrainingRun placement on the real scheduler: nodeSelector, tolerations and affinity reach the
training Pod, the API server stores them as written, and the kube-scheduler honours them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_training_path import TERMINAL, example, iris_setup, model_name, phase, wait_phase
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = pytest.mark.integration

HERE_TOLERATION = {"key": "dockyard.dev/test-only", "operator": "Exists", "effect": "NoSchedule"}
LINUX_ONLY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
            ]
        }
    }
}


def scheduled_condition(pod: dict[str, Any]) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "PodScheduled":
            return dict(c)
    return {}


def test_training_pod_runs_only_on_a_node_its_selector_matches(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    node = kube.list("Node")[0]["metadata"]["labels"]["kubernetes.io/hostname"]
    here = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [HERE_TOLERATION],
        "affinity": LINUX_ONLY,
    }
    iris_setup(kube, model=model_name(kube), tr_patch=here)
    nowhere = example("iris-rf")
    nowhere["metadata"]["name"] = "iris-nowhere"
    nowhere["spec"]["modelName"] = model_name(kube) + "-nowhere"
    nowhere["spec"]["nodeSelector"] = {"dockyard.dev/no-such-node": "true"}
    kube.apply(nowhere)

    stored = kube.get("TrainingRun", "iris-rf")
    assert stored is not None
    assert {k: stored["spec"][k] for k in here} == here  # nothing pruned by the CRD schema

    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Succeeded", tr["status"]
    (ran,) = kube.list("Pod", label_selector=f"job-name={tr['status']['jobName']}")
    assert ran["spec"]["nodeName"] == node
    assert ran["spec"]["tolerations"][0] == HERE_TOLERATION

    job = kube.wait_for_object("TrainingRun", "iris-nowhere", lambda o: (o.get("status") or {}).get("jobName"))
    job_name = job["status"]["jobName"]

    def unschedulable() -> dict[str, Any] | None:
        pods = kube.list("Pod", label_selector=f"job-name={job_name}")
        if pods and scheduled_condition(pods[0]).get("reason") == "Unschedulable":
            return pods[0]
        return None

    pod = kube.wait_for(unschedulable, timeout=60, message="the nowhere Pod reported Unschedulable")
    assert not pod["spec"].get("nodeName") and pod["status"]["phase"] == "Pending"
    assert phase(kube.get("TrainingRun", "iris-nowhere") or {}) == "Running"
