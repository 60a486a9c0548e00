"""Shared pieces of the fault-survival tests (tests/integration/test_fault_survival.py).

* instant-mode results for the node agent (profiling and training Pods succeed at once);
* builders for the TrainingRuns and ModelDeployments the tests load;
* a serving model registered straight through MlflowClient (pinned versions + an alias);
* :func:`assert_converged`: the end-state contract every fault test checks — every object in
  its final phase, exactly one Job / MLflow run / model version per training attempt, and no
  orphaned child objects.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.integration.test_training_path import cond, example, phase
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess

Obj = dict[str, Any]

MANAGED = "app.kubernetes.io/managed-by=dockyard-operator"
CHILD_KINDS = ("Job", "Pod", "Deployment", "ReplicaSet", "Service", "ConfigMap")
TAG_UID = "dockyard.trainingrun.uid"
TAG_ATTEMPT = "dockyard.attempt"
# API writes the operator makes (verb, resource), so "after the Nth write" means after the Nth
# step of the operator's work.
OPERATOR_WRITE_RESOURCES = frozenset(
    {
        "trainingruns/status",
        "datasets/status",
        "modeldeployments/status",
        "jobs",
        "deployments",
        "services",
        "configmaps",
        "events",
    }
)

PROFILE_RESULT = {
    "ok": True,
    "version": "sha256:" + "ab" * 32,
    "rows": 150,
    "columns": 5,
    "profile": {},
    "profileTruncated": False,
    "reason": None,
    "errors": [],
}
TRAIN_RESULT = {"ok": True, "metrics": {}}


# The node agent's instant mode: profiling and training Pods "succeed" at once with
# a valid result as their termination message (by their app.kubernetes.io/component label).
INSTANT_RESULTS = {"profiler": json.dumps(PROFILE_RESULT), "trainer": json.dumps(TRAIN_RESULT)}


# ------------------------------------------------------------------------------ phases

# The order a TrainingRun attempt's phase may only move forward in. A new attempt (retraining)
# starts again from Pending.
PHASE_ORDER = {None: 0, "Pending": 1, "WaitingForData": 2, "Running": 3, "Registering": 4,
               "Succeeded": 5, "Rejected": 5, "Failed": 5}


class PhaseRecorder:
    """Every phase each TrainingRun of a namespace goes through, as its watch delivers them.

    A watch (not polling) so that a step back that lasts one write is seen too. Start it before
    the objects exist, stop it after; ``regressions()`` lists every step back of an attempt's phase."""

    def __init__(self, kube: KubeEnv) -> None:
        from kubernetes import client, config

        self._api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kube.kubeconfig)))
        self._namespace = kube.namespace
        self.seen: dict[str, list[tuple[int, str | None]]] = {}  # name -> [(attempt, phase)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PhaseRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        from kubernetes import watch

        rv = None
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self._api.list_namespaced_custom_object, "dockyard.dev", "v1alpha1", self._namespace,
                    "trainingruns", resource_version=rv, timeout_seconds=2, allow_watch_bookmarks=False,
                ):
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    status = obj.get("status") or {}
                    entry = (int(status.get("attempt") or 1), status.get("phase"))
                    trail = self.seen.setdefault(obj["metadata"]["name"], [])
                    if not trail or trail[-1] != entry:
                        trail.append(entry)
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a broken watch resumes; a 410 re-lists from now
                rv = None

    def regressions(self) -> dict[str, list[tuple[int, str | None]]]:
        def rank(entry: tuple[int, str | None]) -> tuple[int, int]:
            return entry[0], PHASE_ORDER.get(entry[1], -1)

        return {name: trail for name, trail in self.seen.items()
                if any(rank(b) < rank(a) for a, b in zip(trail, trail[1:], strict=False))}


# ------------------------------------------------------------------------------ objects


def dataset_objects() -> list[Obj]:
    """The iris ConfigMap and Dataset of manifests/examples."""
    return [example("iris-data", "ConfigMap"), example("iris", "Dataset")]


def training_run(name: str, model: str) -> Obj:
    """The example TrainingRun without its quality gate (instant mode logs no metrics)."""
    tr = example("iris-rf")
    tr["metadata"] = {"name": name}
    tr["spec"]["modelName"] = model
    tr["spec"].pop("qualityGate", None)
    return tr


def model_deployment(name: str, model: str, variants: list[Obj]) -> Obj:
    doc = copy.deepcopy(example("iris", "ModelDeployment"))
    doc["metadata"] = {"name": name}
    doc["spec"].update(modelName=model, variants=variants)
    doc["spec"].pop("rollout", None)  # names the example's variants; these have others
    return doc


def deployment_variants(index: int) -> list[Obj]:
    """Pinned versions; every fifth deployment follows the alias ``champion`` instead."""
    if index % 5 == 4:
        return [
            {"name": "champion", "alias": "champion", "weight": 80, "replicas": 1},
            {"name": "pinned", "version": "2", "weight": 20, "replicas": 1},
        ]
    first, second = ("1", "2") if index % 2 == 0 else ("2", "1")
    return [
        {"name": "a", "version": first, "weight": 50 + index, "replicas": 1},
        {"name": "b", "version": second, "weight": 50 - index, "replicas": 1},
    ]


def expected_versions(variants: list[Obj], aliases: dict[str, str]) -> dict[str, str]:
    return {v["name"]: v.get("version") or aliases[v["alias"]] for v in variants}


def register_serving_model(mlflow: MlflowServer, model: str, versions: int = 2) -> dict[str, str]:
    """``versions`` model versions of ``model`` from one run, alias ``champion`` -> 1.
    Nothing is logged: the operator resolves versions; instant Pods never fetch them."""
    client = mlflow.client()
    exp_name = f"fault-survival-setup/{model}"
    experiment = client.get_experiment_by_name(exp_name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(exp_name)
    run = client.create_run(exp_id, run_name="serving-setup")
    client.create_registered_model(model)
    for _ in range(versions):
        client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(model, "champion", "1")
    client.set_terminated(run.info.run_id)
    return {"champion": "1"}


# ------------------------------------------------------------------------------ progress


def operator_writes(counters: dict[tuple[str, str], int]) -> int:
    return sum(
        n
        for (verb, resource), n in counters.items()
        if verb in ("create", "patch", "update", "delete") and resource in OPERATOR_WRITE_RESOURCES
    )


def wait_operator_writes(kube: KubeEnv, n: int, cap: float) -> int:
    """Block until the operator made ``n`` more API writes, or ``cap`` seconds passed (a
    converged operator writes nothing, so progress alone cannot be the only exit).
    Returns how many writes happened."""
    counters = kube.counters
    start = operator_writes(counters.snapshot())
    deadline = time.monotonic() + cap
    while True:
        done = operator_writes(counters.snapshot()) - start
        if done >= n or time.monotonic() >= deadline:
            return done
        time.sleep(0.005)


# ------------------------------------------------------------------------------ end state


@dataclass
class Load:
    """What a fault test applied: TrainingRun name -> model, ModelDeployment name -> expected
    variant versions."""

    namespace: str
    trainingruns: dict[str, str] = field(default_factory=dict)
    deployments: dict[str, dict[str, str]] = field(default_factory=dict)
    datasets: tuple[str, ...] = ("iris",)


def _all_in(kube: KubeEnv, kind: str, names: Any, ok: Callable[[Obj], bool]) -> dict[str, Obj] | None:
    objs = {o["metadata"]["name"]: o for o in kube.list(kind)}
    if all(n in objs and ok(objs[n]) for n in names):
        return objs
    return None


def _current(o: Obj) -> bool:
    return (o.get("status") or {}).get("observedGeneration") == o["metadata"].get("generation")


def wait_converged(kube: KubeEnv, load: Load, timeout: float = 180.0) -> tuple[dict, dict, dict]:
    """Wait until every Dataset is Ready, every TrainingRun terminal and every ModelDeployment
    Ready for its generation; returns the three name -> object maps."""

    def describe(kind: str) -> str:
        return json.dumps(
            {o["metadata"]["name"]: (phase(o), cond(o, "Ready").get("reason")) for o in kube.list(kind)}
        )

    got: dict[str, dict[str, Obj]] = {}
    specs = [
        ("Dataset", load.datasets, lambda o: phase(o) in ("Ready", "Invalid", "Failed") and _current(o)),
        (
            "TrainingRun",
            load.trainingruns,
            lambda o: phase(o) in ("Succeeded", "Rejected", "Failed", "Invalid") and _current(o),
        ),
        ("ModelDeployment", load.deployments, lambda o: phase(o) == "Ready" and _current(o)),
    ]
    deadline = time.monotonic() + timeout
    for kind, names, ok in specs:
        if not names:
            got[kind] = {}
            continue
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            found = kube.wait_for(
                functools.partial(_all_in, kube, kind, names, ok),
                timeout=remaining,
                interval=0.25,
                message=f"every {kind} converged",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\nphases: {describe(kind)}") from None
        assert found is not None
        got[kind] = found
    return got["Dataset"], got["TrainingRun"], got["ModelDeployment"]


def mlflow_runs(mlflow: MlflowServer, namespace: str) -> list[Any]:
    """Every MLflow run the operator opened for TrainingRuns of ``namespace``."""
    client = mlflow.client()
    experiments = client.search_experiments(filter_string=f"name LIKE 'dockyard/{namespace}/%'")
    if not experiments:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([e.experiment_id for e in experiments], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def orphans(kube: KubeEnv) -> list[str]:
    """Managed children without an owner, or whose owners do not exist."""
    uids = {
        o["metadata"]["uid"]
        for kind in ("Dataset", "TrainingRun", "ModelDeployment", *CHILD_KINDS)
        for o in kube.list(kind)
    }
    out = []
    for kind in CHILD_KINDS:
        for o in kube.list(kind, label_selector=MANAGED):
            refs = o["metadata"].get("ownerReferences") or []
            if not refs or any(r.get("uid") not in uids for r in refs):
                out.append(f"{kind}/{o['metadata']['name']} owners={[r.get('name') for r in refs]}")
    return out


def assert_converged(kube: KubeEnv, mlflow: MlflowServer, load: Load, timeout: float = 180.0) -> None:
    """The end-state contract of the fault tests (see the module docstring)."""
    datasets, trs, mds = wait_converged(kube, load, timeout)

    # Every object in the right phase.
    for name in load.datasets:
        assert phase(datasets[name]) == "Ready", datasets[name]["status"]
    bad = {
        n: (phase(trs[n]), cond(trs[n], "Ready")) for n in load.trainingruns if phase(trs[n]) != "Succeeded"
    }
    assert not bad, f"TrainingRuns not Succeeded: {bad}"
    for name, want in load.deployments.items():
        st = mds[name]["status"]
        assert cond(mds[name], "Ready")["status"] == "True", st
        got = {v["name"]: str(v["resolvedVersion"]) for v in st["variants"]}
        assert got == want, (name, got, want)

    # Exactly one attempt per TrainingRun, and one Job for it.
    for name in load.trainingruns:
        st = trs[name]["status"]
        assert st["attempt"] == 1, (name, st)
        assert [h["attempt"] for h in st["history"]] == [1], (name, st["history"])
    trainer_jobs = sorted(
        j["metadata"]["name"]
        for j in kube.list("Job")
        if j["metadata"]["labels"].get("app.kubernetes.io/component") == "trainer"
    )
    assert trainer_jobs == sorted(f"{n}-train-1" for n in load.trainingruns), trainer_jobs
    profilers = [
        j
        for j in kube.list("Job")
        if j["metadata"]["labels"].get("app.kubernetes.io/component") == "profiler"
    ]
    assert len(profilers) == len(load.datasets), [j["metadata"]["name"] for j in profilers]

    # Exactly one MLflow run per TrainingRun uid + attempt, and it is the one in status.
    runs = mlflow_runs(mlflow, load.namespace)
    per_identity = Counter((r.data.tags.get(TAG_UID), r.data.tags.get(TAG_ATTEMPT)) for r in runs)
    dupes = {k: v for k, v in per_identity.items() if v != 1}
    assert not dupes, f"MLflow runs opened more than once: {dupes}"
    by_uid = {r.data.tags.get(TAG_UID): r for r in runs}
    for name in load.trainingruns:
        tr = trs[name]
        run = by_uid.get(tr["metadata"]["uid"])
        assert run is not None, f"no MLflow run for {name}"
        assert run.info.run_id == tr["status"]["mlflowRunId"], name
    assert len(runs) == len(load.trainingruns), [r.data.tags.get("dockyard.trainingrun") for r in runs]

    # Exactly one model version per successful attempt (by run id, and per model).
    client = mlflow.client()
    for name, model in load.trainingruns.items():
        st = trs[name]["status"]
        by_run = client.search_model_versions(f"run_id='{st['mlflowRunId']}'")
        assert [v.version for v in by_run] == [st["modelVersion"]], (name, [v.version for v in by_run])
        assert by_run[0].name == model
    models = Counter(load.trainingruns.values())
    for model, n in models.items():
        versions = client.search_model_versions(f"name='{model}'")
        assert len(versions) == n, (model, [(v.version, v.run_id) for v in versions])

    # Children: the right ones, each owned by an existing object, none left over.
    assert orphans(kube) == []
    owned: Counter[tuple[str, str]] = Counter()
    md_uids = {o["metadata"]["uid"]: n for n, o in mds.items()}
    for kind in ("Deployment", "Service", "ConfigMap"):
        for o in kube.list(kind, label_selector=MANAGED):
            for ref in o["metadata"].get("ownerReferences") or []:
                if ref.get("uid") in md_uids:
                    owned[(md_uids[ref["uid"]], kind)] += 1
    for name, want in load.deployments.items():
        # one Deployment + Service per variant, plus the router's Deployment, Service, ConfigMap
        assert owned[(name, "Deployment")] == len(want) + 1, (name, owned)
        assert owned[(name, "Service")] == len(want) + 1, (name, owned)
        assert owned[(name, "ConfigMap")] == 1, (name, owned)


def tracebacks(operator: OperatorProcess, since: int = 0) -> list[str]:
    """Traceback blocks in the operator log after byte offset ``since``."""
    text = (
        operator.log_path.read_bytes()[since:].decode(errors="replace") if operator.log_path.exists() else ""
    )
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            out.append("\n".join(lines[max(i - 2, 0) : i + 25]))
    return out


def log_size(operator: OperatorProcess) -> int:
    return operator.log_path.stat().st_size if operator.log_path.exists() else 0
