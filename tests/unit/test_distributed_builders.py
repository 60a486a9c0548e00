"""TrainJob and RayJob builders (spec.backend): the training contract carried over, GPUs and
placement passed through, and the engines' status read back in the training Job's terms."""

from __future__ import annotations

import json
import shlex
import string
import subprocess
import sys
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dockyard.api.backend import unsafe_ray_args
from dockyard.api.dataset import DatasetSpec
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.builders.distributed import QUEUE_LABEL, build_rayjob, build_trainjob, engine_object_name
from dockyard.config import OperatorConfig
from dockyard.controllers.common import engine_outcome
from dockyard.runtime.train import worker_rank
from tests.plugins.engine_crds import engine_crd, requires_go, validate

OWNER = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "TrainingRun",
         "metadata": {"name": "iris-dist", "namespace": "team-a", "uid": "u-1"}}
DATASET = DatasetSpec.model_validate({"source": {"uri": "s3://bucket/iris.csv", "format": "csv"},
                                      "schema": {"target": "species"}})
CFG = OperatorConfig(mlflow_workload_credentials=True)
COMMON: dict[str, Any] = dict(attempt=2, run_id="run-123", experiment_id="7", dataset_version="sha256:abc", cfg=CFG)


RAY_IMAGE = "registry.example.com/dockyard-ray:0.1"


def spec(backend: dict[str, Any], **extra: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({
        "datasetRef": {"name": "iris"}, "modelName": "iris-model",
        "trainer": {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier"},
                    **({"image": RAY_IMAGE} if backend.get("type") == "rayjob" else {})},
        "backend": backend, **extra})


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


TRAINJOB = {"type": "trainjob", "queueName": "gpu-queue",
            "trainJob": {"runtimeRef": {"name": "torch-distributed"}, "numNodes": 2,
                         "resourcesPerNode": {"requests": {"cpu": "2"}, "gpus": 1}}}
PLACEMENT = {"nodeSelector": {"accelerator": "a100"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def test_a_trainjob_carries_the_mlflow_run_gpus_placement_and_the_queue() -> None:
    obj = build_trainjob(OWNER, spec(TRAINJOB, **PLACEMENT), DATASET, **COMMON)
    assert (obj["apiVersion"], obj["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert obj["metadata"]["name"] == "iris-dist-train-2" and obj["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    trainer = obj["spec"]["trainer"]
    assert obj["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime"}
    assert trainer["numNodes"] == 2 and trainer["command"] == ["dockyard", "train"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    env = env_of(trainer)
    assert env["MLFLOW_RUN_ID"] == "run-123" and env["DOCKYARD_BACKEND"] == "trainjob"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "dockyard-mlflow-workload",
                                                               "key": "MLFLOW_TRACKING_PASSWORD"}}
    (patch,) = obj["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert {k: pod["spec"][k] for k in PLACEMENT} == PLACEMENT
    assert pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_a_trainjob_gets_the_datasets_credentials_key_by_key() -> None:
    """Trainer's TrainJob has no envFrom: each key of the Dataset's Secret becomes an entry,
    as envFrom would give a Job's container (a key that is no variable name is skipped)."""
    dataset = DatasetSpec.model_validate({"source": {"uri": "s3://bucket/iris.csv", "format": "csv",
                                                     "credentialsSecretRef": {"name": "s3-creds"}},
                                          "schema": {"target": "species"}})
    obj = build_trainjob(OWNER, spec(TRAINJOB), dataset, dataset_secret_keys=[
        "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "not a name"], **COMMON)
    secret_env = [e for e in obj["spec"]["trainer"]["env"]
                  if (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") == "s3-creds"]
    assert [(e["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in secret_env] == [
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")]


ENTRYPOINT = ["python", "-m", "trainer.main", "--lr=0.05", "s3://bucket/runs/a,b@v2:x%20y", "+1", "-"]


def through_kuberay_and_ray(entrypoint: str) -> list[str]:
    """The argv Ray's driver gets for a RayJob ``entrypoint``: KubeRay's submitter runs
    ``bash -c -- "ray job submit ... -- <entrypoint> ;"``, ``ray job submit`` re-joins the words
    bash left with ``subprocess.list2cmdline``, and Ray's job manager runs that with /bin/sh.
    Real shells, Ray's joining function; only ``ray job submit`` is replaced by a printer."""
    printer = f"{shlex.quote(sys.executable)} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    words = json.loads(subprocess.run(["/bin/bash", "-c", "--", f"{printer} {entrypoint} ;"],
                                      capture_output=True, text=True, check=True).stdout)
    out = subprocess.run(["/bin/sh", "-c", f"{printer} {subprocess.list2cmdline(words)}"],
                         capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_a_rayjob_makes_its_own_cluster_and_its_entrypoint_reaches_the_driver_unchanged() -> None:
    tr = spec({"type": "rayjob", "rayJob": {"workers": {"replicas": 2, "resources": {"gpus": 1}},
                                            "entrypoint": ENTRYPOINT}}, **PLACEMENT)
    obj = build_rayjob(OWNER, tr, DATASET, **COMMON)
    body = obj["spec"]
    assert through_kuberay_and_ray(body["entrypoint"]) == ENTRYPOINT
    assert body["shutdownAfterJobFinishes"] is True
    head = body["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (workers,) = body["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    worker = workers["template"]["spec"]
    assert worker["nodeSelector"] == PLACEMENT["nodeSelector"] and head["tolerations"] == PLACEMENT["tolerations"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(head["containers"][0])["MLFLOW_RUN_ID"] == "run-123"


def test_every_character_the_entrypoint_rule_allows_survives_both_shells() -> None:
    allowed = "".join(c for c in string.printable if not unsafe_ray_args([f"a{c}b"]))
    assert len(allowed) == 62 + len("_@%+=:,./-")
    args = ["python", *(f"a{allowed[i:i + 8]}b" for i in range(0, len(allowed), 8)), "-", "--x=-1"]
    tr = spec({"type": "rayjob", "rayJob": {"entrypoint": args}})
    assert through_kuberay_and_ray(build_rayjob(OWNER, tr, DATASET, **COMMON)["spec"]["entrypoint"]) == args


def test_shell_syntax_never_reaches_a_rayjob_entrypoint() -> None:
    # rayJob.entrypoint is refused by the CRD schema and the model (tests/data/invalid); a
    # custom trainer's args, the default entrypoint, are refused by the model with their path.
    with pytest.raises(ValidationError, match=r"spec\.trainer\.custom\.args\[1\]"):
        TrainingRunSpec.model_validate({
            "datasetRef": {"name": "iris"}, "modelName": "m",
            "trainer": {"custom": {"image": "ghcr.io/x/t:1", "command": ["python", "t.py"], "args": ["--x", "$(id)"]}},
            "backend": {"type": "rayjob", "rayJob": {}}})


def test_a_rayjob_on_an_existing_cluster_gets_the_run_through_its_runtime_env_without_credentials() -> None:
    obj = build_rayjob(OWNER, spec({"type": "rayjob", "rayJob": {"clusterName": "shared"}}), DATASET, **COMMON)
    body = obj["spec"]
    assert body["clusterSelector"] == {"ray.io/cluster": "shared"} and "rayClusterSpec" not in body
    assert body["shutdownAfterJobFinishes"] is False
    env = yaml.safe_load(body["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_RUN_ID"] == "run-123" and "MLFLOW_TRACKING_PASSWORD" not in env


@requires_go
def test_every_built_engine_object_passes_the_engines_own_schema() -> None:
    """The builders' output against Trainer's and KubeRay's CRDs at the pinned versions
    (structural schema and CEL); the integration tier sends them to kube-apiserver too."""
    secret_ds = DatasetSpec.model_validate({"source": {"uri": "s3://b/iris.csv", "format": "csv",
                                                       "credentialsSecretRef": {"name": "s3-creds"}},
                                            "schema": {"target": "species"}})
    built = [
        build_trainjob(OWNER, spec(TRAINJOB, **PLACEMENT), secret_ds, dataset_secret_keys=["AWS_ACCESS_KEY_ID"],
                       **COMMON),
        build_rayjob(OWNER, spec({"type": "rayjob", "queueName": "q", "rayJob": {
            "workers": {"replicas": 2, "resources": {"gpus": 1}}, "headResources": {"requests": {"cpu": "1"}}}},
            **PLACEMENT), secret_ds, **COMMON),
        build_rayjob(OWNER, spec({"type": "rayjob", "rayJob": {"clusterName": "shared"}}), DATASET, **COMMON),
    ]
    for obj in built:
        assert validate(obj, engine_crd(obj["kind"])) == [], obj["kind"]


def test_rayjob_names_fit_kuberays_limit() -> None:
    name = engine_object_name("a" * 60, 3, "RayJob")
    assert len(name) <= 47 and engine_object_name("a" * 60, 3, "RayJob") == name


@pytest.mark.parametrize("obj, finished, succeeded, reason", [
    ({"kind": "TrainJob", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, True, True, "TrainJobComplete"),
    ({"kind": "TrainJob", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                     "message": "node-1 failed"}]}}, True, False, "BackoffLimitExceeded"),
    ({"kind": "TrainJob", "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}, False, False, ""),
    ({"kind": "RayJob", "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}}, True, True, "RayJobSucceeded"),
    ({"kind": "RayJob", "status": {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
                                   "message": "exit 1"}}, True, False, "AppFailed"),
    ({"kind": "RayJob", "status": {"jobDeploymentStatus": "ValidationFailed"}}, True, False, "ValidationFailed"),
    ({"kind": "RayJob", "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}, False, False, ""),
])
def test_engine_status_becomes_the_training_outcome(obj: dict[str, Any], finished: bool, succeeded: bool,
                                                    reason: str) -> None:
    outcome = engine_outcome(obj)
    assert (outcome.finished, outcome.succeeded) == (finished, succeeded)
    if finished:
        assert outcome.reason == reason


def test_only_rank_zero_logs() -> None:
    assert worker_rank({}) == 0 and worker_rank({"PET_NODE_RANK": "0"}) == 0
    assert worker_rank({"PET_NODE_RANK": "1"}) == 1 and worker_rank({"RANK": "3"}) == 3
