"""Exactly-once under crashes and outages: one MLflow run, one Job, one model version per attempt.

Each crash is pinned to a step boundary with the emulator's fault injection: the write that
would take the operator past the boundary is made to fail, the operator is SIGKILLed while it
is held there, faults are cleared, and a fresh operator process resumes from what the API and
MLflow say. Emulator-only (fault injection), so these skip on a real cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_training_path import (
    TERMINAL,
    cond,
    example,
    iris_setup,
    jobs,
    model_name,
    phase,
    versions_of,
    wait_phase,
)
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = pytest.mark.integration

STATUS = r"/trainingruns/iris-rf/status$"
MANY = 10_000


def runs_for(mlflow: MlflowServer, uid: str) -> list[Any]:
    client = mlflow.client()
    experiments = client.search_experiments()
    return list(
        client.search_runs(
            [e.experiment_id for e in experiments], filter_string=f"tags.`dockyard.trainingrun.uid` = '{uid}'"
        )
    )


def data_then_run(kube: KubeEnv, model: str, arm: Any) -> None:
    """Dataset first; once it is Ready, arm the faults; only then create the TrainingRun, so the
    run cannot get past the step boundary before the fault is in place."""
    kube.apply(example("iris-data", "ConfigMap"))
    kube.apply(example("iris", "Dataset"))
    wait_phase(kube, "Dataset", "iris", ("Ready",), timeout=120)
    arm()
    tr = example("iris-rf")
    tr["spec"]["modelName"] = model
    kube.apply(tr)


def assert_exactly_once(kube: KubeEnv, mlflow: MlflowServer, model: str) -> dict[str, Any]:
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=240)
    assert phase(tr) == "Succeeded", tr["status"]
    assert len(runs_for(mlflow, tr["metadata"]["uid"])) == 1
    assert [j["metadata"]["name"] for j in jobs(kube, "trainer")] == ["iris-rf-train-1"]
    versions = versions_of(mlflow, model)
    assert [v.version for v in versions] == [tr["status"]["modelVersion"]]
    assert versions[0].run_id == tr["status"]["mlflowRunId"]
    return tr


def test_crash_after_run_opened_before_job(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    kube.require_faults()
    model = model_name(kube)
    faults = kube.faults
    # Dataset first (its profiling Job must get through); then fail Job creation; then the run.
    data_then_run(kube, model, lambda: faults.fail_next("POST", r"/namespaces/[^/]+/jobs$", 500, count=MANY))
    kube.wait_for_object(
        "TrainingRun", "iris-rf", lambda o: (o.get("status") or {}).get("mlflowRunId"), timeout=60
    )
    operator.kill()
    kube.faults.clear()
    assert jobs(kube, "trainer") == []
    operator.start()
    assert_exactly_once(kube, mlflow_server, model)


def test_crash_after_job_created_before_status(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    kube.require_faults()
    faults = kube.faults
    model = model_name(kube)
    # Slow Job creation down so there is time to block status writes once the run is recorded.
    data_then_run(kube, model, lambda: faults.add_latency(1.5, method="POST", path_regex=r"/jobs$"))
    kube.wait_for_object(
        "TrainingRun", "iris-rf", lambda o: (o.get("status") or {}).get("mlflowRunId"), timeout=60
    )
    faults.fail_next("PATCH", STATUS, 409, count=MANY)
    kube.wait_for(lambda: jobs(kube, "trainer"), timeout=60, message="training Job created")
    operator.kill()
    faults.clear()
    held = kube.get("TrainingRun", "iris-rf") or {}
    assert "jobName" not in held.get("status", {}), "the crash was meant to land before jobName was recorded"
    operator.start()
    assert_exactly_once(kube, mlflow_server, model)


def test_crash_after_training_before_registration(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer, mlflow_proxy: Any
) -> None:
    kube.require_faults()
    model = model_name(kube)
    mlflow_proxy.fail("POST", r"/model-versions/create$", 503, count=MANY)
    iris_setup(kube, model=model)
    kube.wait_for_object(
        "TrainingRun", "iris-rf", lambda o: cond(o, "MlflowReachable").get("status") == "False", timeout=180
    )
    operator.kill()
    mlflow_proxy.clear()
    assert versions_of(mlflow_server, model) == []
    operator.start()
    assert_exactly_once(kube, mlflow_server, model)


def test_crash_after_registration_before_final_status(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer, mlflow_proxy: Any
) -> None:
    kube.require_faults()
    model = model_name(kube)
    # The alias call comes after registration and before the final status: hold the operator there.
    mlflow_proxy.fail("POST", r"/registered-models/alias$", 503, count=MANY)
    iris_setup(kube, model=model)
    kube.wait_for(lambda: versions_of(mlflow_server, model), timeout=180, message="a registered version")
    kube.wait_for_object(
        "TrainingRun", "iris-rf", lambda o: cond(o, "MlflowReachable").get("status") == "False", timeout=60
    )
    operator.kill()
    mlflow_proxy.clear()
    operator.start()
    tr = assert_exactly_once(kube, mlflow_server, model)
    assert cond(tr, "Registered")["status"] == "True"
    assert (
        mlflow_server.client().get_model_version_by_alias(model, "challenger").version
        == tr["status"]["modelVersion"]
    )


def test_mlflow_outage_then_recovery(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    data_only = iris_setup(kube, model=model)
    del data_only
    wait_phase(kube, "Dataset", "iris", ("Ready",), timeout=120)
    kube.delete("TrainingRun", "iris-rf")
    kube.wait_for_deleted("TrainingRun", "iris-rf")
    mlflow_server.stop()
    try:
        iris_setup(kube, model=model)
        down = kube.wait_for_object(
            "TrainingRun",
            "iris-rf",
            lambda o: cond(o, "MlflowReachable").get("status") == "False",
            timeout=60,
        )
        assert cond(down, "MlflowReachable")["reason"] == "MlflowUnavailable"
        assert jobs(kube, "trainer") == []
    finally:
        mlflow_server.start()
    tr = assert_exactly_once(kube, mlflow_server, model)
    assert cond(tr, "MlflowReachable")["status"] == "True"
    assert operator.alive()


def test_injected_api_errors_converge(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    kube.require_faults()
    faults = kube.faults
    faults.fail_next("PATCH", r"/status$", 500, count=3)
    faults.fail_next("PATCH", r"/status$", 409, count=3)
    faults.fail_next("POST", r"/jobs$", 429, count=2, retry_after=1)
    faults.fail_next("GET", r"/pods$", 500, count=2)
    model = model_name(kube)
    iris_setup(kube, model=model)
    faults.drop_watches()
    assert_exactly_once(kube, mlflow_server, model)
    assert operator.alive()
