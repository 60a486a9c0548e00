"""Training path end to end: Dataset -> profiling Job -> TrainingRun -> Job -> MLflow -> registry.

The operator runs as a real process against the real control plane (or another cluster); the
node agent runs the Jobs' Pods as real `dockyard profile` / `dockyard train` processes; MLflow
is a real server. Assertions read back MLflow with its own client.
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
TERMINAL = ("Succeeded", "Rejected", "Failed", "Invalid")


def example(name: str, kind: str | None = None) -> dict[str, Any]:
    """A document from manifests/examples by name (and kind: the Dataset and the
    ModelDeployment are both called `iris`)."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["metadata"]["name"] == name and (kind is None or doc["kind"] == kind):
                return copy.deepcopy(doc)
    raise KeyError(name)


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def iris_setup(
    kube: KubeEnv,
    *,
    model: str,
    tr_patch: dict[str, Any] | None = None,
    ds_patch: dict[str, Any] | None = None,
    csv: str | None = None,
) -> tuple[dict, dict]:
    data = example("iris-data", "ConfigMap")
    if csv is not None:
        data["data"]["iris.csv"] = csv
    kube.apply(data)
    ds = example("iris", "Dataset")
    ds["spec"].update(ds_patch or {})
    kube.apply(ds)
    tr = example("iris-rf")
    tr["spec"]["modelName"] = model
    tr["spec"].update(tr_patch or {})
    kube.apply(tr)
    return ds, tr


def wait_phase(kube: KubeEnv, kind: str, name: str, phases: tuple[str, ...], timeout: float = 180) -> dict:
    return kube.wait_for_object(kind, name, lambda o: phase(o) in phases, timeout=timeout)


def versions_of(mlflow: MlflowServer, model: str) -> list[Any]:
    return list(mlflow.client().search_model_versions(f"name='{model}'"))


def jobs(kube: KubeEnv, component: str) -> list[dict[str, Any]]:
    return [
        j for j in kube.list("Job") if j["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


def model_name(kube: KubeEnv) -> str:
    return f"iris-{kube.namespace}"


def test_iris_example_trains_registers_and_aliases(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    iris_setup(kube, model=model)

    ds = wait_phase(kube, "Dataset", "iris", ("Ready", "Invalid", "Failed"), timeout=120)
    assert phase(ds) == "Ready", ds["status"]
    st = ds["status"]
    assert st["version"].startswith("sha256:") and len(st["version"]) == 71
    assert st["rows"] == 150 and st["columns"] == 5
    assert "species" in st["profile"]
    assert [v["version"] for v in st["versions"]] == [st["version"]]
    assert cond(ds, "Ready")["status"] == "True"

    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Succeeded", json.dumps(tr["status"], indent=1)
    st = tr["status"]
    for c in ("DataReady", "Trained", "Registered", "Ready"):
        assert cond(tr, c)["status"] == "True", (c, st["conditions"])
    assert st["datasetVersion"] == ds["status"]["version"]
    assert st["metrics"]["accuracy"] >= 0.8
    assert st["observedGeneration"] == tr["metadata"]["generation"]

    client = mlflow_server.client()
    mv = client.get_model_version(model, st["modelVersion"])
    assert mv.run_id == st["mlflowRunId"]
    assert mv.tags["dockyard.trainingrun"] == f"{kube.namespace}/iris-rf"
    assert mv.tags["dockyard.dataset.version"] == ds["status"]["version"]
    assert client.get_model_version_by_alias(model, "challenger").version == st["modelVersion"]
    run = client.get_run(st["mlflowRunId"])
    assert run.data.tags["dockyard.trainingrun.uid"] == tr["metadata"]["uid"]
    assert run.data.tags["dockyard.dataset.name"] == "iris"
    assert run.info.status == "FINISHED"
    assert abs(run.data.metrics["accuracy"] - st["metrics"]["accuracy"]) < 1e-9

    assert len(versions_of(mlflow_server, model)) == 1
    assert [j["metadata"]["name"] for j in jobs(kube, "trainer")] == ["iris-rf-train-1"]
    assert len(jobs(kube, "profiler")) == 1
    # Every write of the operator is owned by the field manager "dockyard" (not by a name
    # made from the HTTP client's User-Agent): the status, and the Jobs it created.
    status_managers = {m["manager"] for m in tr["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert status_managers == {"dockyard"}, status_managers
    job_managers = {m["manager"] for m in jobs(kube, "trainer")[0]["metadata"]["managedFields"]}
    assert "dockyard" in job_managers and job_managers <= {"dockyard", "kube-controller-manager"}, job_managers
    reasons = {e.get("reason") for e in kube.list("Event")}
    assert {"ModelRegistered", "Succeeded"} <= reasons, reasons
    history = st["history"]
    assert history == [
        {
            "attempt": 1,
            "datasetVersion": st["datasetVersion"],
            "mlflowRunId": st["mlflowRunId"],
            "jobName": "iris-rf-train-1",
            "result": "Succeeded",
            "modelVersion": st["modelVersion"],
            "completionTime": history[0]["completionTime"],
        }
    ]
    text = operator.metrics()
    assert f'dockyard_model_versions_registered_total{{model="{model}"}} 1.0' in text
    assert 'dockyard_training_duration_seconds_count{result="succeeded"} 1.0' in text
    assert 'dockyard_resources{kind="TrainingRun",phase="Succeeded"} 1.0' in text
    assert 'dockyard_resources{kind="Dataset",phase="Ready"} 1.0' in text
    assert 'dockyard_reconcile_total{kind="TrainingRun",result="success"}' in text


def test_quality_gate_rejects_without_registering(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    iris_setup(kube, model=model, tr_patch={"qualityGate": {"metric": "accuracy", "threshold": 1.01}})
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Rejected"
    ready = cond(tr, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "QualityGateFailed"
    assert "accuracy=" in ready["message"] and "1.01" in ready["message"]
    assert "modelVersion" not in tr["status"]
    assert versions_of(mlflow_server, model) == []


def test_failing_training_command_marks_run_failed(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    trainer = {"estimator": {"class": "sklearn.ensemble.NoSuchEstimator"}}
    iris_setup(kube, model=model, tr_patch={"trainer": trainer})
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Failed"
    assert cond(tr, "Ready")["reason"] == "InvalidEstimator", tr["status"]
    assert cond(tr, "Trained")["status"] == "False"
    run = mlflow_server.client().get_run(tr["status"]["mlflowRunId"])
    assert run.info.status == "FAILED"
    assert versions_of(mlflow_server, model) == []


def test_custom_trainer_failure_reports_exit_code_and_last_words(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    """A bring-your-own trainer that dies says how: its exit code and the tail of its log (it wrote
    no termination message) are in the status message and the Event, not only "backoff limit"."""
    trainer = {"custom": {"image": "python:3.12-slim", "command": [
        "python3", "-c", "import sys; print('loading data'); print('CUDA out of memory', file=sys.stderr); sys.exit(7)"]}}
    iris_setup(kube, model=model_name(kube), tr_patch={"trainer": trainer})
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Failed"
    message = tr["status"]["message"]
    assert "exited with code 7" in message and "CUDA out of memory" in message, message
    events = kube.wait_for(lambda: [e for e in kube.list("Event") if e.get("reason") == "BackoffLimitExceeded"
                                    and e["involvedObject"]["kind"] == "TrainingRun"], 30, message="Event")
    assert "exited with code 7" in events[0]["message"]


def test_bound_attempt_never_waits_for_data_again_and_shows_why_it_is_stuck(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    """A training Pod that cannot be scheduled shows why in status (no Job condition says it, and
    no deadline ends it). Its Dataset edited, deleted and re-created meanwhile, across an operator
    restart, never sends the bound attempt back to WaitingForData."""
    from tests.integration.fault_support import PhaseRecorder

    phases = PhaseRecorder(kube).start()
    iris_setup(kube, model=model_name(kube), tr_patch={"resources": {"requests": {"cpu": "1000"}}})
    tr = kube.wait_for_object("TrainingRun", "iris-rf", lambda o: cond(o, "Trained").get("reason") == "Unschedulable",
                              timeout=120)
    assert phase(tr) == "Running" and cond(tr, "Ready")["status"] == "False"
    assert "Insufficient cpu" in tr["status"]["message"], tr["status"]
    ds = example("iris", "Dataset")
    ds["spec"]["validation"]["minRows"] = 10
    kube.apply(ds)
    dataset_ready(kube, generation=2)
    kube.delete("Dataset", "iris")
    kube.wait_for_deleted("Dataset", "iris")
    operator.restart()
    kube.apply(example("iris", "Dataset"))
    wait_phase(kube, "Dataset", "iris", ("Ready",))
    # The restarted operator has judged the TrainingRun against the re-created Dataset.
    kube.wait_for(lambda: _reconciles(operator, "TrainingRun") >= 2, 60, message="TrainingRun reconciled")
    phases.stop()
    assert phases.regressions() == {}, phases.seen
    tr = kube.get("TrainingRun", "iris-rf")
    assert tr is not None and phase(tr) == "Running" and cond(tr, "Trained")["reason"] == "Unschedulable"


def test_deleting_a_running_trainingrun_ends_its_mlflow_run(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    """A TrainingRun deleted mid-training ends its MLflow run as KILLED before it goes (a
    finalizer held while the run is open); a finished one carries no finalizer."""
    iris_setup(kube, model=model_name(kube), tr_patch={"resources": {"requests": {"cpu": "1000"}}})
    tr = kube.wait_for_object("TrainingRun", "iris-rf", lambda o: (o.get("status") or {}).get("jobName"), timeout=120)
    assert tr["metadata"].get("finalizers") == ["dockyard.dev/end-mlflow-run"]
    run_id = tr["status"]["mlflowRunId"]
    assert mlflow_server.client().get_run(run_id).info.status == "RUNNING"
    kube.delete("TrainingRun", "iris-rf")
    kube.wait_for_deleted("TrainingRun", "iris-rf", timeout=60)
    assert mlflow_server.client().get_run(run_id).info.status == "KILLED"

    done = example("iris-rf")
    done["metadata"]["name"] = "iris-rf-2"
    done["spec"]["modelName"] = model_name(kube)
    kube.apply(done)
    tr = kube.wait_for_object("TrainingRun", "iris-rf-2",
                              lambda o: phase(o) in TERMINAL and not o["metadata"].get("finalizers"), timeout=180)
    assert phase(tr) == "Succeeded"


def test_configmap_edit_is_a_new_version_at_once(kube: KubeEnv, operator: OperatorProcess) -> None:
    """A Dataset read from a ConfigMap (no refreshInterval) re-profiles when the ConfigMap is
    edited: the operator watches it."""
    data = example("iris-data", "ConfigMap")
    kube.apply(data)
    kube.apply(example("iris", "Dataset"))
    first = wait_phase(kube, "Dataset", "iris", ("Ready",))["status"]["version"]
    data["data"]["iris.csv"] += "5.0,3.3,1.4,0.2,setosa\n"
    kube.apply(data)
    ds = kube.wait_for_object("Dataset", "iris", lambda o: phase(o) == "Ready" and o["status"].get("version") != first,
                              timeout=60)
    assert ds["status"]["rows"] == 151 and [v["version"] for v in ds["status"]["versions"]][0] == first


def test_old_profile_jobs_are_pruned(kube: KubeEnv, operator: OperatorProcess) -> None:
    """Every Dataset change or refresh profiles in a new Job; only the newest few stay."""
    from dockyard.controllers.dataset import PROFILE_JOBS_KEPT
    from tests.integration.fault_support import INSTANT_RESULTS

    kube.run_pods_instantly(INSTANT_RESULTS)
    kube.apply(example("iris-data", "ConfigMap"))
    ds = example("iris", "Dataset")
    for generation, min_rows in enumerate(range(10, 10 + PROFILE_JOBS_KEPT + 3), start=1):
        ds["spec"]["validation"]["minRows"] = min_rows
        kube.apply(ds)
        dataset_ready(kube, generation)
    current = kube.get("Dataset", "iris")
    assert current is not None
    kube.wait_for(lambda: len(jobs(kube, "profiler")) == PROFILE_JOBS_KEPT, 30,
                  message=f"{PROFILE_JOBS_KEPT} profile Jobs left")
    assert current["status"]["jobName"] in {j["metadata"]["name"] for j in jobs(kube, "profiler")}


def test_a_refused_child_reaches_status_and_events(kube: KubeEnv, operator: OperatorProcess) -> None:
    """A quota (or RBAC, or admission) refusal of the profile Job is in the Dataset's status with
    the API's own message and in a Warning Event, not only in the operator's log; once the
    quota is lifted, the retry goes through."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
             "spec": {"hard": {"count/jobs.batch": "0"}}}
    kube.apply(quota)
    kube.wait_for_object("ResourceQuota", "no-jobs", lambda q: "count/jobs.batch" in (q.get("status") or {}).get("hard", {}),
                         timeout=30)
    kube.apply(example("iris-data", "ConfigMap"))
    kube.apply(example("iris", "Dataset"))
    ds = kube.wait_for_object("Dataset", "iris", lambda o: cond(o, "Ready").get("reason") == "ChildRejected", timeout=60)
    assert cond(ds, "Ready")["status"] == "False"
    assert "exceeded quota" in ds["status"]["message"] and "no-jobs" in ds["status"]["message"], ds["status"]
    events = kube.wait_for(lambda: [e for e in kube.list("Event") if e.get("reason") == "ChildRejected"], 30,
                           message="ChildRejected Event")
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "iris"
    kube.delete("ResourceQuota", "no-jobs")
    wait_phase(kube, "Dataset", "iris", ("Ready",), timeout=90)


def dataset_ready(kube: KubeEnv, generation: int, name: str = "iris") -> dict:
    return kube.wait_for_object("Dataset", name, lambda o: phase(o) == "Ready" and o["metadata"]["generation"] == generation
                                and o["status"].get("observedGeneration") == generation, timeout=60)


def _reconciles(operator: OperatorProcess, kind: str) -> float:
    found = re.findall(rf'^dockyard_reconcile_total{{kind="{kind}",result="\w+"}} (\S+)$', operator.metrics(), re.M)
    return sum(float(v) for v in found)


@pytest.mark.parametrize("case", ["schema", "missing"])
def test_bad_data_makes_dataset_invalid_and_training_waits(
    case: str, kube: KubeEnv, operator: OperatorProcess
) -> None:
    csv = example("iris-data", "ConfigMap")["data"]["iris.csv"]
    if case == "schema":
        csv = csv.replace("virginica", "martian", 1)  # not in allowedValues
        expected = "SchemaViolation"
    else:
        lines = csv.splitlines()
        lines[1] = ",".join(
            ["", *lines[1].split(",")[1:]]
        )  # one missing sepal_length; maxMissingFraction is 0
        csv = "\n".join(lines) + "\n"
        expected = "QualityRuleViolation"
    ds_patch: dict[str, Any] = {}
    if case == "missing":
        # Nullable column, so the missing value is judged by the quality rule, not by the schema.
        schema = example("iris", "Dataset")["spec"]["schema"]
        schema["columns"][0]["nullable"] = True
        ds_patch["schema"] = schema
    iris_setup(kube, model=model_name(kube), csv=csv, ds_patch=ds_patch)
    ds = wait_phase(kube, "Dataset", "iris", ("Ready", "Invalid", "Failed"), timeout=120)
    assert phase(ds) == "Invalid"
    assert cond(ds, "Ready")["reason"] == expected, ds["status"]
    assert cond(ds, "Stalled")["status"] == "True"
    tr = kube.wait_for_object(
        "TrainingRun",
        "iris-rf",
        lambda o: cond(o, "DataReady").get("reason") == "DatasetNotReady",
        timeout=30,
    )
    assert phase(tr) == "WaitingForData"
    assert jobs(kube, "trainer") == []


def test_dataset_change_triggers_retraining(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    model = model_name(kube)
    iris_setup(kube, model=model, ds_patch={"refreshInterval": "2s"})
    tr = wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    assert phase(tr) == "Succeeded"
    first_version = tr["status"]["datasetVersion"]

    data = example("iris-data", "ConfigMap")
    data["data"]["iris.csv"] += "5.0,3.3,1.4,0.2,setosa\n"
    kube.apply(data)
    tr = kube.wait_for_object(
        "TrainingRun",
        "iris-rf",
        lambda o: (o.get("status") or {}).get("attempt") == 2 and phase(o) in TERMINAL,
        timeout=240,
    )
    assert phase(tr) == "Succeeded"
    st = tr["status"]
    assert st["datasetVersion"] != first_version
    assert [h["attempt"] for h in st["history"]] == [1, 2]
    assert st["history"][0]["datasetVersion"] == first_version
    assert {j["metadata"]["name"] for j in jobs(kube, "trainer")} == {"iris-rf-train-1", "iris-rf-train-2"}
    versions = versions_of(mlflow_server, model)
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert mlflow_server.client().get_model_version_by_alias(model, "challenger").version == "2"
    ds = kube.get("Dataset", "iris")
    assert ds is not None and len(ds["status"]["versions"]) == 2


def test_invalid_reference_reports_and_does_not_crash(
    kube: KubeEnv, operator: OperatorProcess
) -> None:
    tr = example("iris-rf")
    tr["spec"]["datasetRef"] = {"name": "does-not-exist"}
    kube.apply(tr)
    got = kube.wait_for_object("TrainingRun", "iris-rf", lambda o: phase(o) == "WaitingForData", timeout=30)
    assert cond(got, "DataReady")["reason"] == "DatasetNotFound"
    assert cond(got, "Ready")["status"] == "False"
    ds = example("iris", "Dataset")
    ds["spec"]["source"] = {
        "uri": "s3://bucket/iris.csv",
        "format": "csv",
        "credentialsSecretRef": {"name": "nope"},
    }
    kube.apply(ds)
    got = kube.wait_for_object(
        "Dataset", "iris", lambda o: cond(o, "Ready").get("reason") == "SecretNotFound", timeout=30
    )
    assert "nope" in cond(got, "Ready")["message"]
    assert jobs(kube, "profiler") == []
    assert operator.alive() and operator.error_lines() == []


def test_steady_state_writes_nothing(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer
) -> None:
    kube.require_faults()
    iris_setup(kube, model=model_name(kube))
    wait_phase(kube, "TrainingRun", "iris-rf", TERMINAL)
    # Events are posted in the background: the window opens once the last one has landed.
    kube.wait_for(lambda: any(e.get("reason") == "Succeeded" for e in kube.list("Event")), timeout=30,
                  message="the Succeeded Event")
    counters = kube.counters

    def quiet_for(seconds: float) -> dict:
        # Proving the absence of writes needs an observation window; nothing to poll for.
        before = counters.snapshot()
        time.sleep(seconds)
        return {k: v for k, v in counters.writes(before).items() if v}

    writes = quiet_for(3.0)
    assert writes == {}, writes
    operator.restart()
    writes_after_restart = quiet_for(4.0)
    assert writes_after_restart == {}, writes_after_restart
