"""The profiling and training Job builders: spec in, Job dict out."""

from __future__ import annotations

import json

import pytest

from dockyard.api.dataset import DatasetSpec
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.builders.training import (
    build_profile_job,
    build_training_job,
    profile_job_name,
    training_job_name,
)
from dockyard.config import OperatorConfig
from dockyard.labels import SPEC_HASH_ANNOTATION

CFG = OperatorConfig(mlflow_tracking_uri_for_pods="http://mlflow.dockyard:5000", runtime_image="rt:1")


def owner(kind: str, name: str = "iris") -> dict:
    return {
        "apiVersion": "dockyard.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"},
    }


DATASET = DatasetSpec.model_validate(
    {
        "source": {
            "uri": "file:///data/iris.csv",
            "format": "csv",
            "volume": {"configMap": {"name": "iris-data"}, "mountPath": "/data"},
        },
        "schema": {"target": "species", "columns": [{"name": "species", "type": "string"}]},
    }
)
S3_DATASET = DatasetSpec.model_validate(
    {
        "source": {
            "uri": "s3://bucket/iris.parquet",
            "format": "parquet",
            "credentialsSecretRef": {"name": "s3-creds"},
        },
    }
)
TRAIN = TrainingRunSpec.model_validate(
    {
        "datasetRef": {"name": "iris"},
        "modelName": "iris-classifier",
        "trainer": {
            "estimator": {
                "class": "sklearn.ensemble.RandomForestClassifier",
                "hyperparameters": {"n_estimators": 50, "max_depth": None, "criterion": "gini"},
            }
        },
        "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}, "gpus": 1},
        "backoffLimit": 2,
        "activeDeadlineSeconds": 600,
    }
)


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_profile_job_names_are_deterministic_per_generation_and_refresh() -> None:
    assert profile_job_name("iris", 3, 0) == profile_job_name("iris", 3, 0) == "iris-profile-g3-r0"
    assert profile_job_name("iris", 3, 1) != profile_job_name("iris", 3, 0)
    long = profile_job_name("x" * 80, 1, 0)
    assert len(long) <= 63 and long != profile_job_name("x" * 79 + "y", 1, 0)


def test_profile_job_mounts_configmap_and_passes_spec() -> None:
    job = build_profile_job(owner("Dataset"), DATASET, job_name="iris-profile-g1-r0", cfg=CFG)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["dockyard", "profile"]
    assert container["image"] == "rt:1"
    env = env_of(container)
    assert env["DOCKYARD_DATASET_URI"] == "file:///data/iris.csv"
    assert json.loads(env["DOCKYARD_DATASET_SPEC"])["schema"]["target"] == "species"
    assert {"name": "data", "configMap": {"name": "iris-data"}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "dockyard-operator"
    assert SPEC_HASH_ANNOTATION in job["metadata"]["annotations"]


def test_training_job_env_contract_resources_and_security() -> None:
    job = build_training_job(
        owner("TrainingRun", "iris-rf"),
        TRAIN,
        DATASET,
        attempt=2,
        run_id="r123",
        experiment_id="7",
        dataset_version="sha256:" + "a" * 64,
        cfg=CFG,
    )
    assert job["metadata"]["name"] == training_job_name("iris-rf", 2) == "iris-rf-train-2"
    spec = job["spec"]
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.dockyard:5000"
    assert env["MLFLOW_RUN_ID"] == "r123"
    assert env["DOCKYARD_DATASET_VERSION"] == "sha256:" + "a" * 64
    assert env["DOCKYARD_TARGET"] == "species"
    assert env["DOCKYARD_ATTEMPT"] == "2"
    assert json.loads(env["DOCKYARD_HYPERPARAMETERS"]) == {
        "n_estimators": 50,
        "max_depth": None,
        "criterion": "gini",
    }
    assert env["DOCKYARD_HP_N_ESTIMATORS"] == "50" and env["DOCKYARD_HP_CRITERION"] == "gini"
    assert container["resources"] == {
        "requests": {"cpu": "1"},
        "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert job["metadata"]["labels"]["dockyard.dev/attempt"] == "2"


def test_custom_trainer_keeps_exec_form_and_contract_wins() -> None:
    spec = TrainingRunSpec.model_validate(
        {
            "datasetRef": {"name": "iris"},
            "modelName": "m",
            "trainer": {
                "custom": {
                    "image": "me/trainer:1",
                    "command": ["python", "train.py"],
                    "args": ["--x", "$(rm -rf)"],
                    "env": [{"name": "MLFLOW_RUN_ID", "value": "spoof"}, {"name": "EXTRA", "value": "1"}],
                }
            },
        }
    )
    job = build_training_job(
        owner("TrainingRun"),
        spec,
        S3_DATASET,
        attempt=1,
        run_id="real",
        experiment_id="1",
        dataset_version="sha256:" + "b" * 64,
        cfg=CFG,
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "me/trainer:1"
    assert container["command"] == ["python", "train.py"]
    assert container["args"] == ["--x", "$(rm -rf)"]  # passed as one argv word, no shell involved
    env = env_of(container)
    assert env["MLFLOW_RUN_ID"] == "real" and env["EXTRA"] == "1"
    assert [e["name"] for e in container["env"]].count("MLFLOW_RUN_ID") == 1
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_spec_hash_changes_with_content_only() -> None:
    a = build_profile_job(owner("Dataset"), DATASET, job_name="j", cfg=CFG)
    b = build_profile_job(owner("Dataset"), DATASET, job_name="j", cfg=CFG)
    c = build_profile_job(owner("Dataset"), S3_DATASET, job_name="j", cfg=CFG)
    key = SPEC_HASH_ANNOTATION
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key]
    assert a["metadata"]["annotations"][key] != c["metadata"]["annotations"][key]


@pytest.mark.parametrize("gpus,expected", [(None, None), (0, None), (2, "2")])
def test_gpu_limit(gpus: int | None, expected: str | None) -> None:
    raw = TRAIN.model_dump(by_alias=True, exclude_none=True)
    raw["resources"] = {"gpus": gpus} if gpus is not None else {}
    job = build_training_job(
        owner("TrainingRun"),
        TrainingRunSpec.model_validate(raw),
        DATASET,
        attempt=1,
        run_id="r",
        experiment_id="1",
        dataset_version="sha256:" + "c" * 64,
        cfg=CFG,
    )
    res = job["spec"]["template"]["spec"]["containers"][0].get("resources", {})
    assert res.get("limits", {}).get("nvidia.com/gpu") == expected


GPU_NODES = {
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu-type", "operator": "In", "values": ["a100"]}]}
                ]
            }
        }
    },
}


@pytest.mark.parametrize("scheduling", [GPU_NODES, {}], ids=["gpu-nodes", "unset"])
def test_training_pod_goes_where_the_spec_says(scheduling: dict) -> None:
    raw = {**TRAIN.to_api(), **scheduling}
    job = build_training_job(
        owner("TrainingRun"),
        TrainingRunSpec.model_validate(raw),
        DATASET,
        attempt=1,
        run_id="r",
        experiment_id="1",
        dataset_version="sha256:" + "c" * 64,
        cfg=CFG,
    )
    pod = job["spec"]["template"]["spec"]
    assert {k: pod[k] for k in GPU_NODES if k in pod} == scheduling
