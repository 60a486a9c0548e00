"""TrainingRun.spec.backend against the real API server with the engines' real CRDs (Kubeflow
Trainer v2.3.0's TrainJob, KubeRay v1.6.2's RayJob, from their Go modules: see
tests/plugins/engine_crds.py), installed once per session.

No engine controller runs here (see docs/distributed-training.md for why): the API server
accepting the operator's objects is the schema and CEL check; the engine's part (running the
workers, reporting status) is played by the test: it runs the built-in trainer for rank 1 and
rank 0 with the environment the operator wrote into the TrainJob, then reports the TrainJob
Complete through its status subresource, as Trainer's controller would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_training_path import (
    cond,
    example,
    iris_setup,
    model_name,
    phase,
    versions_of,
    wait_phase,
)
from tests.plugins.engine_crds import install_engine_crds, requires_go
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess
from tests.runtime.helpers import run_dockyard

pytestmark = [pytest.mark.integration, requires_go]

TERMINAL = ("Succeeded", "Rejected", "Failed", "Invalid")
RAYJOB_CRD = "rayjobs.ray.io"


def crd_path(kube: KubeEnv, name: str) -> str:
    return kube.cluster.path("CustomResourceDefinition", name=name)


def crd_present(kube: KubeEnv, name: str) -> bool:
    try:
        kube.cluster.request("GET", crd_path(kube, name))
        return True
    except Exception as exc:  # kubernetes ApiException 404
        if getattr(exc, "status", None) == 404:
            return False
        raise


@pytest.fixture(autouse=True)
def _engine_crds(engine_crds_installed: dict[str, str]) -> None:
    """The engines' CRDs in the cluster before the operator looks for them."""


def reinstall_engine_crds(kube: KubeEnv) -> None:
    install_engine_crds(kube.cluster, kinds=("RayJob",))


RAY_IMAGE = "rayproject/ray:2.52.0"  # a RayJob's own cluster needs an image with Ray


def backend_patch(backend: dict[str, Any]) -> dict[str, Any]:
    trainer: dict[str, Any] = {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                                             "hyperparameters": {"n_estimators": 5}}}
    if backend["type"] == "rayjob":
        trainer["image"] = RAY_IMAGE
    return {"backend": backend, "trainer": trainer}


def test_a_missing_engine_api_is_reported_and_picked_up_once_installed(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    kube.cluster.request("DELETE", crd_path(kube, RAYJOB_CRD))
    try:
        kube.wait_for(lambda: not crd_present(kube, RAYJOB_CRD), timeout=60, interval=0.2, message="RayJob CRD gone")
        iris_setup(kube, model=model_name(kube), tr_patch=backend_patch(
            {"type": "rayjob", "rayJob": {"workers": {"replicas": 2}}}))
        tr = kube.wait_for_object("TrainingRun", "iris-rf", lambda o: cond(o, "Ready").get("reason") ==
                                  "BackendUnavailable", timeout=180)
        assert cond(tr, "Ready")["status"] == "False" and "KubeRay" in cond(tr, "Ready")["message"]
        assert operator.alive() and not operator.error_lines()
    finally:
        reinstall_engine_crds(kube)
    # Installed now: the next look (every minute, or any change, as here) makes the RayJob.
    kube.patch("TrainingRun", "iris-rf", {"metadata": {"annotations": {"test/nudge": str(time.time())}}})
    rayjob = kube.wait_for(lambda: kube.get("RayJob", "iris-rf-train-1", api_version="ray.io/v1"), timeout=90,
                           interval=0.5, message="the RayJob")
    (workers,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == 2 and rayjob["spec"]["entrypoint"] == "dockyard train"
    kube.wait_for_object("TrainingRun", "iris-rf", lambda o: "RayJob iris-rf-train-1 is running" in (
        o.get("status") or {}).get("message", ""), timeout=60)


def trainer_env(trainjob: dict[str, Any], kube: KubeEnv) -> dict[str, str]:
    """The environment a TrainJob node gets from the operator's spec (secret refs resolved)."""
    env: dict[str, str] = {}
    for item in trainjob["spec"]["trainer"]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in (item.get("valueFrom") or {}):
            ref = item["valueFrom"]["secretKeyRef"]
            secret = kube.get("Secret", ref["name"])
            if secret is not None and ref["key"] in (secret.get("data") or {}):
                import base64

                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def test_a_two_node_trainjob_is_followed_to_one_registered_version(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    model = model_name(kube)
    iris_setup(kube, model=model, tr_patch={
        **backend_patch({"type": "trainjob", "trainJob": {"runtimeRef": {"name": "torch-distributed"},
                                                           "numNodes": 2, "resourcesPerNode": {"gpus": 1}}}),
        "nodeSelector": {"accelerator": "a100"}})
    trainjob = kube.wait_for(lambda: kube.get("TrainJob", "iris-rf-train-1", api_version="trainer.kubeflow.org/v1alpha1"),
                             timeout=180, interval=0.5, message="the TrainJob")
    spec = trainjob["spec"]
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    node = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert node["template"]["spec"]["template"]["spec"]["nodeSelector"] == {"accelerator": "a100"}

    # The engine's part: both ranks run the trainer with the TrainJob's environment; the data
    # is where the Dataset's volume would mount it.
    env = trainer_env(trainjob, kube)
    data = tmp_path / "iris.csv"
    data.write_text(example("iris-data", "ConfigMap")["data"]["iris.csv"])  # the Dataset's very bytes
    env["DOCKYARD_DATASET_URI"] = data.as_uri()
    for rank in ("1", "0"):
        term = tmp_path / f"termination-{rank}"
        proc = run_dockyard("train", env={**env, "PET_NODE_RANK": rank, "DOCKYARD_TERMINATION_LOG": str(term)},
                            timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(term.read_text())
        assert ("rank" in result) == (rank == "1"), result  # rank 1 logged nothing
    kube.patch("TrainJob", "iris-rf-train-1", {"status": {"conditions": [{
        "type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "2/2 nodes succeeded",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}},
        api_version="trainer.kubeflow.org/v1alpha1", subresource="status")

    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=180)
    assert phase(tr) == "Succeeded", json.dumps(tr["status"], indent=1)
    (version,) = versions_of(mlflow_server, model)
    assert version.run_id == tr["status"]["mlflowRunId"] and cond(tr, "Trained")["reason"] == "JobsCompleted"


def test_an_engine_failure_carries_the_engines_reason(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    iris_setup(kube, model=model_name(kube), tr_patch=backend_patch(
        {"type": "rayjob", "rayJob": {"workers": {"replicas": 1}}}))
    kube.wait_for(lambda: kube.get("RayJob", "iris-rf-train-1", api_version="ray.io/v1"), timeout=180,
                  interval=0.5, message="the RayJob")
    kube.patch("RayJob", "iris-rf-train-1", {"status": {
        "jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
        "message": "driver exited with code 1"}}, api_version="ray.io/v1", subresource="status")
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=120)
    assert phase(tr) == "Failed"
    ready = cond(tr, "Ready")
    assert ready["reason"] == "AppFailed" and "driver exited with code 1" in ready["message"]
    assert mlflow_server.client().get_run(tr["status"]["mlflowRunId"]).info.status == "FAILED"
