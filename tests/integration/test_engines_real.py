"""spec.backend through the engines' real controllers: Kubeflow Trainer v2.3.0's controller
manager and the JobSet v0.12.0 controller it runs a TrainJob through, built from hack/engines
(tests/localcluster/engines.py) and run as host processes against the local control plane
(fixture engine_controllers, tests/plugins/engine_controllers.py).

Dockyard makes the TrainJob; Trainer turns it into a JobSet; JobSet makes the node Job; the
Job controller makes the two Pods; the node agent runs them with Dockyard's runtime image (the
built-in sklearn trainer, rank 0 logs the model, rank 1 exits); Trainer reports the TrainJob
Complete and the operator registers the one version. Nothing in between is played by the test.

About 35 s, plus, once per machine, the build of the two controllers (about 2.5 min cold on
2 cores, module downloads included; cached by a hash of hack/engines/go.mod and go.sum).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.integration.test_training_path import cond, iris_setup, model_name, phase, versions_of, wait_phase
from tests.plugins.engine_controllers import EngineControllers
from tests.plugins.engine_crds import requires_go
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = [pytest.mark.integration, requires_go]

TERMINAL = ("Succeeded", "Rejected", "Failed", "Invalid")
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
NAME = "iris-rf-train-1"


COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def rank_of(pod: dict[str, Any]) -> str:
    """The node rank the Pod ran with: Trainer's torch plugin sets PET_NODE_RANK from the
    indexed Job's completion-index annotation (downward API)."""
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env") or []}
    field = env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == f"metadata.annotations['{COMPLETION_INDEX}']", field
    return str(pod["metadata"]["annotations"][COMPLETION_INDEX])


def test_a_two_node_trainjob_runs_through_trainer_and_jobset_to_one_version(
    kube: KubeEnv, engine_controllers: EngineControllers, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    iris_setup(kube, model=model, tr_patch={
        "backend": {"type": "trainjob", "trainJob": {"runtimeRef": {"name": "torch-distributed"}, "numNodes": 2}},
        "trainer": {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                                  "hyperparameters": {"n_estimators": 5, "random_state": 0}}}})
    try:
        kube.wait_for(lambda: kube.get("TrainJob", NAME, api_version=TRAINJOB_API), timeout=180, interval=0.2,
                      message="the TrainJob")
        marks["TrainJob created"] = time.monotonic() - t0
        jobset = kube.wait_for(lambda: kube.get("JobSet", NAME, api_version=JOBSET_API), timeout=60,
                               interval=0.2, message="Trainer's JobSet")
        marks["JobSet created"] = time.monotonic() - t0
        (owner,) = jobset["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner.get("controller")) == ("TrainJob", NAME, True)
        (node,) = jobset["spec"]["replicatedJobs"]
        assert node["name"] == "node" and node["template"]["spec"]["parallelism"] == 2

        selector = f"jobset.sigs.k8s.io/jobset-name={NAME}"
        kube.wait_for(lambda: len(kube.list("Pod", label_selector=selector)) == 2, timeout=60, interval=0.2,
                      message="the JobSet's two Pods")
        marks["2 Pods created"] = time.monotonic() - t0

        tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=600)
        marks["TrainingRun terminal"] = time.monotonic() - t0
    except AssertionError:
        print(engine_controllers.log_tail(), "\n----- operator\n", operator.log_tail())
        raise
    assert phase(tr) == "Succeeded", json.dumps(tr["status"], indent=1) + "\n" + engine_controllers.log_tail()

    pods = kube.list("Pod", label_selector=selector)
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Succeeded"}, [
        (p["metadata"]["name"], p["status"].get("phase")) for p in pods]
    # Trainer's torch plugin gives each node its rank; the runtime's Pods are Dockyard's image.
    assert sorted(rank_of(p) for p in pods) == ["0", "1"]
    assert all(p["spec"]["containers"][0]["image"].split("/")[-1].startswith("dockyard-runtime") for p in pods)

    trainjob = kube.get("TrainJob", NAME, api_version=TRAINJOB_API)
    assert trainjob is not None and cond(trainjob, "Complete").get("status") == "True", trainjob.get("status")
    (version,) = versions_of(mlflow_server, model)
    assert version.run_id == tr["status"]["mlflowRunId"]
    assert operator.alive() and not operator.error_lines()
    print(f"\nengines: build {engine_controllers.build_seconds:.1f} s, start {engine_controllers.start_seconds:.1f} s; "
          + ", ".join(f"{k} +{v:.1f} s" for k, v in marks.items()))
