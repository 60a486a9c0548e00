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

The same for a KubeRay ``RayJob``: KubeRay's ray-operator v1.6.2 (hack/engines/kuberay, fixture
``kuberay_controller``) turns Dockyard's RayJob into a RayCluster (one head, two workers) and,
the RayJob being in HTTPMode, submits the job to the head's dashboard itself (no submitter Pod:
the namespace enforces Pod Security "restricted" as every test namespace does); the image is
``rayproject/ray:2.52.0``, which the
node agent runs from a virtualenv with ``ray[default]==2.52.0`` (built once from PyPI, about
40 s, 344 MB). The driver, tests/integration/ray_trainer.py, scores cross-validation folds as
Ray tasks spread over the nodes, then logs the model into the operator's MLflow run as the
built-in trainer does. KubeRay's exec probes (Ray < 2.53) need the node agent's numeric-uid
nsenter. About 90 s, plus the ray-operator build (about 2 min cold) and the virtualenv.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_training_path import cond, iris_setup, model_name, phase, versions_of, wait_phase
from tests.plugins.engine_controllers import EngineControllers, KubeRayController
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


RAYJOB_API = "ray.io/v1"
RAY_IMAGE = "rayproject/ray:2.52.0"  # the node agent's catalog: the Ray venv (tests/localcluster/engines.py)
RAY_TRAINER = Path(__file__).with_name("ray_trainer.py")


def test_a_rayjob_with_two_workers_runs_through_kuberay_to_one_version(
    kube: KubeEnv, kuberay_controller: KubeRayController, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    iris_setup(kube, model=model, tr_patch={
        "backend": {"type": "rayjob", "rayJob": {"entrypoint": ["python", str(RAY_TRAINER)],
                                                 "workers": {"replicas": 2}}},
        "trainer": {"custom": {"image": RAY_IMAGE, "env": [{"name": "RAY_TRAINER_WORKERS", "value": "2"}]}}})
    try:
        rayjob = kube.wait_for(lambda: kube.get("RayJob", NAME, api_version=RAYJOB_API), timeout=180,
                               interval=0.2, message="the RayJob")
        marks["RayJob created"] = time.monotonic() - t0
        (owner,) = rayjob["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner.get("controller")) == ("TrainingRun", "iris-rf", True), owner
        cluster_name = kube.wait_for(
            lambda: ((kube.get("RayJob", NAME, api_version=RAYJOB_API) or {}).get("status") or {}).get("rayClusterName"),
            timeout=60, interval=0.2, message="KubeRay's RayCluster for the RayJob")
        raycluster = kube.wait_for(lambda: kube.get("RayCluster", cluster_name, api_version=RAYJOB_API), timeout=30,
                                   interval=0.2, message=f"RayCluster {cluster_name}")
        marks["RayCluster created"] = time.monotonic() - t0
        (group,) = raycluster["spec"]["workerGroupSpecs"]
        assert group["replicas"] == 2, group

        def ray_pods() -> dict[str, list[dict[str, Any]]] | None:
            pods = kube.list("Pod", label_selector=f"ray.io/cluster={cluster_name}")
            by_type: dict[str, list[dict[str, Any]]] = {}
            for p in pods:
                by_type.setdefault(p["metadata"]["labels"].get("ray.io/node-type", "?"), []).append(p)
            return by_type if len(by_type.get("head", [])) == 1 and len(by_type.get("worker", [])) == 2 else None

        pods = kube.wait_for(ray_pods, timeout=60, interval=0.2, message="the RayCluster's head and two worker Pods")
        marks["3 Ray Pods created"] = time.monotonic() - t0
        assert {p["spec"]["containers"][0]["image"] for ps in pods.values() for p in ps} == {RAY_IMAGE}

        def workers_ready() -> bool:
            for p in kube.list("Pod", label_selector=f"ray.io/cluster={cluster_name}"):
                status = p.get("status") or {}
                for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
                    reason = (c.get("state") or {}).get("waiting", {}).get("reason")
                    # Fail at once, not after the timeout: a node agent started before the
                    # catalog had the Ray image (a long-lived local cluster) cannot run it.
                    assert reason not in ("ErrImagePull", "ImagePullBackOff"), (
                        f"{p['metadata']['name']}: {c['state']['waiting']} (is the node agent older than "
                        f"tests/localcluster/images.py's {RAY_IMAGE} entry? restart the local cluster)")
            cluster = kube.get("RayCluster", cluster_name, api_version=RAYJOB_API) or {}
            return (cluster.get("status") or {}).get("readyWorkerReplicas") == 2

        kube.wait_for(workers_ready, timeout=120, interval=0.5, message="the two Ray workers ready")
        marks["RayCluster ready"] = time.monotonic() - t0

        tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=300)
        marks["TrainingRun terminal"] = time.monotonic() - t0
    except AssertionError:
        for p in kube.list("Pod"):
            states = [(c["name"], c.get("state"), c.get("restartCount"))
                      for c in (p.get("status") or {}).get("containerStatuses") or []]
            print(f"pod {p['metadata']['name']}: {(p.get('status') or {}).get('phase')} {states}")
        print(kuberay_controller.log_tail(10), "\n----- operator\n", operator.log_tail())
        raise
    rayjob = kube.get("RayJob", NAME, api_version=RAYJOB_API)
    assert rayjob is not None
    status = rayjob.get("status") or {}
    assert phase(tr) == "Succeeded", json.dumps(tr["status"], indent=1) + "\n" + json.dumps(status, indent=1) \
        + "\n" + kuberay_controller.log_tail()
    assert (status.get("jobDeploymentStatus"), status.get("jobStatus")) == ("Complete", "SUCCEEDED"), status

    (version,) = versions_of(mlflow_server, model)
    assert version.run_id == tr["status"]["mlflowRunId"]
    run = mlflow_server.client().get_run(version.run_id)
    # The driver's folds ran as Ray tasks on the workers: SPREAD put them on more than one node,
    # among them both worker Pods.
    assert int(run.data.tags["dockyard.ray.task_nodes"]) >= 2, run.data.tags
    assert int(run.data.tags["dockyard.ray.worker_nodes"]) == 2, run.data.tags
    assert run.data.metrics["cv_folds"] == 6 and run.data.metrics["accuracy"] >= 0.8, run.data.metrics
    # HTTPMode: KubeRay made no submitter Job.
    assert not [j["metadata"]["name"] for j in kube.list("Job")
                if any(o["kind"] == "RayJob" for o in j["metadata"].get("ownerReferences") or [])]
    assert operator.alive() and not operator.error_lines()
    print(f"\nkuberay: build {kuberay_controller.build_seconds:.1f} s, ray venv {kuberay_controller.ray_venv_seconds:.1f} s, "
          f"start {kuberay_controller.start_seconds:.1f} s, {len(kuberay_controller.error_lines())} error lines; "
          + ", ".join(f"{k} +{v:.1f} s" for k, v in marks.items()))
