"""Every Pod template the operator builds runs non-root, without privilege escalation.

Uses the same checker as the Helm chart's Pod templates (tests/chart/podsecurity.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api.dataset import DatasetSpec
from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.builders.serving import desired_serving_children
from dockyard.builders.training import build_profile_job, build_training_job
from dockyard.config import OperatorConfig
from tests.chart.podsecurity import assert_pod_security

CFG = OperatorConfig()
DATASET = DatasetSpec.model_validate(
    {"source": {"uri": "file:///data/iris.csv", "volume": {"configMap": {"name": "iris-data"}}},
     "schema": {"target": "species"}}
)


def owner(kind: str) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "iris", "namespace": "ns", "uid": "u"}}


def training_jobs() -> list[dict[str, Any]]:
    builtin = TrainingRunSpec.model_validate({
        "datasetRef": {"name": "iris"}, "modelName": "m",
        "trainer": {"estimator": {"class": "sklearn.linear_model.LogisticRegression"}},
        "resources": {"gpus": 1}})
    custom = TrainingRunSpec.model_validate({
        "datasetRef": {"name": "iris"}, "modelName": "m",
        "trainer": {"custom": {"image": "me/train:1", "command": ["python", "t.py"]}}})
    kw = {"attempt": 1, "run_id": "r", "experiment_id": "1", "dataset_version": "sha256:" + "0" * 64, "cfg": CFG}
    return [
        build_profile_job(owner("Dataset"), DATASET, job_name="iris-profile-g1-r0", cfg=CFG),
        build_training_job(owner("TrainingRun"), builtin, DATASET, **kw),
        build_training_job(owner("TrainingRun"), custom, DATASET, **kw),
    ]


def serving_children(runtime: str, router: str) -> list[dict[str, Any]]:
    router_spec: dict[str, Any] = {"type": router}
    if router == "gateway":
        router_spec["gateway"] = {"parentRefs": [{"name": "gw"}]}
    spec = ModelDeploymentSpec.model_validate({
        "modelName": "iris", "runtime": runtime, "router": router_spec,
        "variants": [{"name": "a", "version": "1", "weight": 80}, {"name": "b", "version": "2", "weight": 20}]})
    uris = {"a": "s3://models/1/artifacts", "b": "s3://models/2/artifacts"}
    return desired_serving_children(owner("ModelDeployment"), spec, {"a": "1", "b": "2"}, CFG, model_uris=uris)


def test_training_and_profiling_jobs_are_locked_down() -> None:
    checked = assert_pod_security(training_jobs(), strict=True, min_pod_templates=3)
    assert checked == 3


@pytest.mark.parametrize("runtime", ["mlserver", "seldon"])
@pytest.mark.parametrize("router", ["builtin", "gateway", "istio"])
def test_serving_and_router_pods_are_locked_down(runtime: str, router: str) -> None:
    objs = serving_children(runtime, router)
    expected = 3 if router == "builtin" else 2  # two variants (+ the nginx router)
    assert assert_pod_security(objs, strict=True, min_pod_templates=expected) == expected


@pytest.mark.parametrize("runtime", ["mlserver", "seldon"])
def test_seldon_router_pods_are_non_root(runtime: str) -> None:
    # Seldon's prepackaged MLflow server builds its environment at start-up, so its root
    # filesystem cannot be read-only; everything else still holds.
    objs = serving_children(runtime, "seldon")
    assert assert_pod_security(objs, min_pod_templates=1) >= 1
