"""An authenticated model registry, for real (docs/security.md).

MLflow runs its basic-auth app exactly as the chart's embedded MLflow does (the chart's
bootstrap script, tests/plugins/mlflow_server.py). The operator runs under the chart's RBAC
with the operator's MLflow user and ``DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS=true``, as the chart
sets it up. One namespace and one operator serve the whole module, so the last test can scan
everything they left behind for credentials.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dockyard.builders.training import training_job_name
from dockyard.registry_access import OWNER_TAG, WORKLOAD_SECRET, workload_username
from tests.integration.test_serving_path import md, ready
from tests.integration.test_training_path import cond, example, iris_setup, wait_phase
from tests.plugins.kube import KubeCluster, KubeEnv, scratch_namespace
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

pytestmark = pytest.mark.integration

MODEL = "auth-iris"
API = "/api/2.0/mlflow"
# Every credential this module saw: the last test looks for each of them everywhere.
SEEN_CREDENTIALS: set[str] = set()


@pytest.fixture(scope="module")
def auth_kube(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    with scratch_namespace(kube_cluster, "registry-auth", tmp_path_factory.mktemp("registry-auth")) as env:
        yield env


@pytest.fixture(scope="module")
def auth_operator(kube_cluster: KubeCluster, auth_kube: KubeEnv, mlflow_auth_server: MlflowServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    auth = mlflow_auth_server.auth
    assert auth is not None
    SEEN_CREDENTIALS.update({auth.admin_password, auth.operator_password, auth.flask_secret_key})
    proc = OperatorProcess(
        kube_cluster.operator_kubeconfig(), mlflow_auth_server.uri, tmp_path_factory.mktemp("auth-operator"),
        namespaces=[auth_kube.namespace],
        extra_env={**auth.operator_env(), "DOCKYARD_MLFLOW_WORKLOAD_CREDENTIALS": "true"},
    ).start()
    yield proc
    proc.stop()


def call(server: MlflowServer, method: str, path: str, auth: tuple[str, str] | None = None,
         **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{server.uri}{path}", auth=auth, timeout=30, **kwargs)


def admin(server: MlflowServer) -> tuple[str, str]:
    assert server.auth is not None
    return server.auth.admin()


def workload_credential(kube: KubeEnv) -> tuple[str, str]:
    secret = kube.get("Secret", WORKLOAD_SECRET)
    assert secret is not None, "the operator did not create the namespace's MLflow credential"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    SEEN_CREDENTIALS.add(data["MLFLOW_TRACKING_PASSWORD"])
    return data["MLFLOW_TRACKING_USERNAME"], data["MLFLOW_TRACKING_PASSWORD"]


def training_run(name: str, *, model: str, **spec: Any) -> dict[str, Any]:
    doc = example("iris-rf")
    doc["metadata"]["name"] = name
    doc["spec"].update(modelName=model, **spec)
    return doc


def test_anonymous_and_wrong_credentials_get_401(mlflow_auth_server: MlflowServer) -> None:
    server = mlflow_auth_server
    reads = [("GET", f"{API}/registered-models/search"), ("GET", f"{API}/experiments/search?max_results=5")]
    writes = [("POST", f"{API}/registered-models/create", {"name": "anonymous"}),
              ("POST", f"{API}/experiments/create", {"name": "anonymous"}),
              ("POST", f"{API}/registered-models/alias", {"name": "x", "alias": "champion", "version": "1"})]
    for method, path in reads:
        assert call(server, method, path).status_code == 401, path
        assert call(server, method, path, auth=("admin", "not-the-password")).status_code == 401, path
        assert call(server, method, path, auth=admin(server)).status_code == 200, path
    for method, path, body in writes:
        assert call(server, method, path, json=body).status_code == 401, path
    # The UI's health endpoint stays open (kubelet probes carry no credentials).
    assert call(server, "GET", "/health").status_code == 200


def test_training_and_serving_with_the_credentials_dockyard_hands_out(
    auth_kube: KubeEnv, auth_operator: OperatorProcess, mlflow_auth_server: MlflowServer
) -> None:
    kube, server = auth_kube, mlflow_auth_server
    iris_setup(kube, model=MODEL)
    tr = wait_phase(kube, "TrainingRun", "iris-rf", ("Succeeded", "Rejected", "Failed"), timeout=300)
    assert tr["status"]["phase"] == "Succeeded", tr["status"]
    assert tr["status"]["modelVersion"] == "1"

    # The trainer Pod got the namespace's own MLflow user, through its Secret only.
    username, password = workload_credential(kube)
    assert username == workload_username(kube.namespace)
    job = kube.get("Job", tr["status"]["jobName"])
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": WORKLOAD_SECRET}} in container["envFrom"]
    assert not [e for e in container.get("env") or [] if e["name"].startswith("MLFLOW_TRACKING_") and
                e["name"] not in ("MLFLOW_TRACKING_URI",)]

    # What the operator created is tagged as this namespace's.
    got = call(server, "GET", f"{API}/registered-models/get", auth=admin(server), params={"name": MODEL}).json()
    assert {t["key"]: t["value"] for t in got["registered_model"]["tags"]}[OWNER_TAG] == kube.namespace

    # Serving: fetch-model downloads version 1 with the same workload credential.
    kube.apply(md(MODEL, [{"name": "main", "version": "1", "weight": 100}]))
    served = ready(kube, timeout=240)
    assert cond(served, "VariantsReady")["status"] == "True"
    pods = kube.list("Pod", label_selector="dockyard.dev/variant=main")
    assert pods and all(p["status"].get("podIP") for p in pods)
    spec = pods[0]["spec"]
    fetch = [c for c in spec.get("initContainers") or [] if c["name"] == "fetch-model"]
    assert fetch and {"secretRef": {"name": WORKLOAD_SECRET}} in fetch[0]["envFrom"]

    # What that credential can and cannot do in the registry.
    workload = (username, password)
    run_id = tr["status"]["mlflowRunId"]
    assert call(server, "GET", f"{API}/model-versions/get", workload,
                params={"name": MODEL, "version": "1"}).status_code == 200
    assert call(server, "POST", f"{API}/runs/log-metric", workload,
                json={"run_id": run_id, "key": "checked_by_test", "value": 1, "timestamp": 0}).status_code == 200
    refused = {
        "move an alias": ("POST", f"{API}/registered-models/alias",
                          {"name": MODEL, "alias": "champion", "version": "1"}),
        "delete a version": ("DELETE", f"{API}/model-versions/delete", {"name": MODEL, "version": "1"}),
        "register a version": ("POST", f"{API}/model-versions/create",
                               {"name": MODEL, "source": f"runs:/{run_id}/model", "run_id": run_id}),
        "grant itself rights": ("POST", "/api/3.0/mlflow/users/permissions/grant", {
            "username": username, "resource_type": "registered_model", "resource_id": MODEL,
            "permission": "MANAGE"}),
        "create a user": ("POST", f"{API}/users/create", {"username": "intruder", "password": "x" * 16}),
    }
    for what, (method, path, body) in refused.items():
        answer = call(server, method, path, workload, json=body)
        assert answer.status_code == 403, (what, answer.status_code, answer.text[:200])

    # A Secret edited to name another MLflow user (the operator's, say) is not trusted: the
    # operator puts the namespace's own user back instead of resetting that user's password.
    assert server.auth is not None
    kube.patch("Secret", WORKLOAD_SECRET, {"stringData": {
        "MLFLOW_TRACKING_USERNAME": server.auth.operator_username, "MLFLOW_TRACKING_PASSWORD": "chosen-by-a-tenant"}})
    auth_operator.restart()
    repaired = kube.wait_for_object("Secret", WORKLOAD_SECRET, lambda s: base64.b64decode(
        s["data"]["MLFLOW_TRACKING_USERNAME"]).decode() == username, timeout=60)
    new_password = base64.b64decode(repaired["data"]["MLFLOW_TRACKING_PASSWORD"]).decode()
    SEEN_CREDENTIALS.add(new_password)
    assert new_password != "chosen-by-a-tenant"
    search = f"{API}/registered-models/search"
    assert call(server, "GET", search, (server.auth.operator_username, "chosen-by-a-tenant")).status_code == 401
    assert call(server, "GET", search, server.auth.admin()).status_code == 200
    assert call(server, "GET", search, (username, new_password)).status_code == 200


def test_another_namespaces_experiment_and_model_are_refused(
    auth_kube: KubeEnv, auth_operator: OperatorProcess, mlflow_auth_server: MlflowServer
) -> None:
    """The operator may write anything in MLflow; a TrainingRun must not borrow that to log
    into, or register versions of, what another namespace's Dockyard objects own or another
    namespace's workload can change."""
    kube, server = auth_kube, mlflow_auth_server
    other = {"key": OWNER_TAG, "value": "another-team"}
    call(server, "POST", f"{API}/experiments/create", admin(server),
         json={"name": "another-team-experiment", "tags": [other]}).raise_for_status()
    call(server, "POST", f"{API}/registered-models/create", admin(server),
         json={"name": "another-team-model", "tags": [other]}).raise_for_status()

    # The Dataset of the first test is ready in this namespace: only TrainingRuns are new.
    kube.apply(training_run("borrowed-experiment", model="auth-borrowed", experiment="another-team-experiment"))
    tr = wait_phase(kube, "TrainingRun", "borrowed-experiment", ("Succeeded", "Rejected", "Failed"), timeout=120)
    assert (tr["status"]["phase"], cond(tr, "Ready")["reason"]) == ("Failed", "ExperimentInAnotherNamespace")
    assert kube.get("Job", training_job_name("borrowed-experiment", 1)) is None

    kube.apply(training_run("borrowed-model", model="another-team-model"))
    tr = wait_phase(kube, "TrainingRun", "borrowed-model", ("Succeeded", "Rejected", "Failed"), timeout=300)
    assert (tr["status"]["phase"], cond(tr, "Ready")["reason"]) == ("Failed", "ModelInAnotherNamespace")
    versions = call(server, "GET", f"{API}/model-versions/search", admin(server),
                    params={"filter": "name='another-team-model'"}).json()
    assert not versions.get("model_versions")

    # Untagged, but created ahead of time by another namespace's workload (its trainer code may
    # create names; MLflow makes it their MANAGEr): a trap the operator must not walk into.
    squatter = ("dockyard-ns-another-team", "squatters-password-1234")
    call(server, "POST", f"{API}/users/create", admin(server),
         json={"username": squatter[0], "password": squatter[1]}).raise_for_status()
    SEEN_CREDENTIALS.add(squatter[1])
    call(server, "POST", f"{API}/experiments/create", squatter, json={"name": "squatted-experiment"}).raise_for_status()
    call(server, "POST", f"{API}/registered-models/create", squatter, json={"name": "squatted-model"}).raise_for_status()
    kube.apply(training_run("squatted-experiment", model="auth-squat", experiment="squatted-experiment"))
    tr = wait_phase(kube, "TrainingRun", "squatted-experiment", ("Succeeded", "Rejected", "Failed"), timeout=120)
    assert (tr["status"]["phase"], cond(tr, "Ready")["reason"]) == ("Failed", "ExperimentInAnotherNamespace")
    assert squatter[0] in tr["status"]["message"]
    kube.apply(training_run("squatted-model", model="squatted-model"))
    tr = wait_phase(kube, "TrainingRun", "squatted-model", ("Succeeded", "Rejected", "Failed"), timeout=300)
    assert (tr["status"]["phase"], cond(tr, "Ready")["reason"]) == ("Failed", "ModelInAnotherNamespace")


def test_no_credential_in_events_status_logs_or_specs(
    auth_kube: KubeEnv, auth_operator: OperatorProcess, mlflow_auth_server: MlflowServer
) -> None:
    """Runs after the tests above (file order): every credential they saw, looked for in
    every Event, status, Job/Deployment/ReplicaSet/Pod/ConfigMap of the namespace, and in the
    operator's and MLflow's logs. Secrets are where they belong, and are not scanned."""
    kube = auth_kube
    assert len(SEEN_CREDENTIALS) >= 4, "the tests that hand out credentials did not run first"
    texts: dict[str, str] = {}
    for kind in ("Event", "Job", "Deployment", "ReplicaSet", "Pod", "ConfigMap", "Service", "NetworkPolicy",
                 "TrainingRun", "Dataset", "ModelDeployment"):
        for obj in kube.list(kind):
            texts[f"{kind}/{obj['metadata']['name']}"] = yaml.safe_dump(obj)
    assert any(k.startswith("Event/") for k in texts) and any(k.startswith("Job/") for k in texts)
    for path in (auth_operator.log_path, mlflow_auth_server.log_path):
        texts[str(path)] = Path(path).read_text(errors="replace")
    for where, text in texts.items():
        for credential in SEEN_CREDENTIALS:
            for form in (credential, base64.b64encode(credential.encode()).decode()):
                assert form not in text, f"a credential appears in {where}"
