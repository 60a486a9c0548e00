"""Hyperparameter sweeps end to end: the operator against the real control plane, trial Jobs
run by the node agent as real `dockyard train` processes on iris, a real MLflow. Assertions
read MLflow back with its own client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.test_training_path import iris_setup, jobs, model_name, phase, versions_of, wait_phase
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = pytest.mark.integration

TERMINAL = ("Succeeded", "Rejected", "Failed", "Invalid")
GRID = [{"name": "n_estimators", "values": [2, 5, 20]}, {"name": "max_depth", "values": [1, 2, 4]}]


def sweep_patch(parameters: list[dict[str, Any]], parallelism: int) -> dict[str, Any]:
    return {
        "trainer": {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                                  "hyperparameters": {"random_state": 0}}},
        "sweep": {"strategy": "grid", "parameters": parameters, "parallelism": parallelism,
                  "metric": "accuracy", "direction": "maximize"},
    }


def trial_runs(mlflow: MlflowServer, parent: str) -> list[Any]:
    client = mlflow.client()
    experiment = client.get_run(parent).info.experiment_id
    return list(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=100))


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """The most intervals [start, end) open at one instant."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_a_3x3_grid_registers_only_the_best_trial(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    iris_setup(kube, model=model, tr_patch=sweep_patch(GRID, parallelism=3))
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=420)
    st = tr["status"]
    assert phase(tr) == "Succeeded", json.dumps(st, indent=1)
    sweep = st["sweep"]
    assert (sweep["planned"], sweep["succeeded"], sweep["failed"]) == (9, 9, 0), sweep
    assert sweep["summary"].startswith("9/9 best ")

    children = trial_runs(mlflow_server, st["mlflowRunId"])
    assert len(children) == 9 and {r.data.tags["dockyard.trial"] for r in children} == {str(i) for i in range(9)}
    assert {(r.data.params["n_estimators"], r.data.params["max_depth"]) for r in children} == {
        (n, d) for n in ("2", "5", "20") for d in ("1", "2", "4")}
    top = max(r.data.metrics["accuracy"] for r in children)
    # The best by the metric; among equals, the earliest trial.
    best = min((r for r in children if r.data.metrics["accuracy"] == top), key=lambda r: int(r.data.tags["dockyard.trial"]))
    assert sweep["bestValue"] == top and sweep["bestTrial"] == int(best.data.tags["dockyard.trial"])

    (version,) = versions_of(mlflow_server, model)  # only the best, once
    assert version.run_id == best.info.run_id and st["modelVersion"] == version.version
    parent = mlflow_server.client().get_run(st["mlflowRunId"])
    assert {k: parent.data.params[k] for k in ("n_estimators", "max_depth")} == {
        k: best.data.params[k] for k in ("n_estimators", "max_depth")}
    assert parent.data.metrics["accuracy"] == best.data.metrics["accuracy"]
    assert parent.data.tags["dockyard.sweep.best_run"] == best.info.run_id
    assert len(jobs(kube, "trainer")) == 9
    # parallelism 3: at most three trials open at any moment, and three did run at once.
    assert max_overlap([(r.info.start_time, r.info.end_time) for r in children]) == 3


def test_an_operator_killed_mid_sweep_starts_no_trial_twice(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    grid = [{"name": "n_estimators", "values": [3, 6]}, {"name": "max_depth", "values": [2, 3]}]
    iris_setup(kube, model=model, tr_patch=sweep_patch(grid, parallelism=2))
    kube.wait_for_object("TrainingRun", "iris-rf", lambda o: ((o.get("status") or {}).get("sweep") or {}).get(
        "running", 0) >= 1, timeout=180)
    operator.kill()  # mid-sweep: trial runs opened and Jobs created, nothing finished yet
    operator.start()
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=420)
    assert phase(tr) == "Succeeded", json.dumps(tr["status"], indent=1)
    children = trial_runs(mlflow_server, tr["status"]["mlflowRunId"])
    assert sorted(r.data.tags["dockyard.trial"] for r in children) == ["0", "1", "2", "3"]
    assert len(jobs(kube, "trainer")) == 4
    assert len(versions_of(mlflow_server, model)) == 1


def test_a_sweep_whose_trials_all_fail_fails_with_the_reason(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    # scikit-learn refuses a negative max_depth: every trial's trainer fails.
    iris_setup(kube, model=model, tr_patch=sweep_patch([{"name": "max_depth", "values": [-1, -2]}], parallelism=2))
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL, timeout=300)
    st = tr["status"]
    assert phase(tr) == "Failed", json.dumps(st, indent=1)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AllTrialsFailed" and "all 2 trials failed" in ready["message"]
    assert "max_depth" in ready["message"], ready["message"]  # the trainer's own words
    assert st["sweep"]["failed"] == 2 and versions_of(mlflow_server, model) == []
    assert mlflow_server.client().get_run(st["mlflowRunId"]).info.status == "FAILED"
