"""Hand-written TrainJob and RayJob objects against the engines' real CRDs (Kubeflow Trainer
v2.3.0, KubeRay 1.6.2), downloaded from the Go module proxy by tests/plugins/engine_crds.py.

The valid objects pass; each broken one fails with the field the API server would name. That is
what shows the validator is real (a validator that accepts everything fails the broken cases).
tests/cluster/test_engine_crds.py sends the same objects to kube-apiserver.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.localcluster import build
from tests.plugins.engine_crds import (
    ENGINE_KINDS,
    defaulted,
    engine_crd,
    requires_go,
    sample_runtime,
    validate,
)

pytestmark = requires_go

Obj = dict[str, Any]
MANAGER = "dockyard.dev/trainingrun"  # the runtimePatches owner a TrainingRun would write


def minimal_trainjob(name: str = "llm-finetune") -> Obj:
    """2 nodes x 1 GPU on the torch-distributed runtime, pinned to GPU nodes via runtimePatches
    (the only place Trainer v2.2+ takes nodeSelector and tolerations)."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "dockyard"}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "image": "ghcr.io/example/train:1.0",
                "command": ["torchrun", "/app/train.py"],
                "args": ["--epochs", "3"],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}],
                "numNodes": 2,
                "resourcesPerNode": {
                    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
                    "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
                },
            },
            "runtimePatches": [{
                "manager": MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                    "name": "node",
                    "template": {"spec": {"template": {"spec": {
                        "nodeSelector": {"nvidia.com/gpu.present": "true"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    }}}},
                }]}}},
            }],
        },
    }


def minimal_rayjob(name: str = "ray-train") -> Obj:
    """A RayJob with its own cluster: one head, one worker group of 2 GPU workers, torn down
    when the job finishes."""
    container = {"image": "rayproject/ray:2.52.0-gpu", "resources": {"limits": {"cpu": "2", "memory": "8Gi"}}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "python /app/train.py --epochs 3",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 60,
            "rayClusterSpec": {
                "rayVersion": "2.52.0",
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [{"name": "ray-head", **container}]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu",
                    "replicas": 2,
                    "minReplicas": 2,
                    "maxReplicas": 2,
                    "rayStartParams": {},
                    "template": {"spec": {
                        "containers": [{"name": "ray-worker", **container,
                                        "resources": {"limits": {"cpu": "2", "nvidia.com/gpu": 1}}}],
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    }},
                }],
            },
        },
    }


def _without(path: list[str | int]) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        node: Any = obj
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _set(path: list[str | int], value: Any) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        node: Any = obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


# (id, kind, edit, the field path the error must start with, words the error must contain; the
# same for our validator and kube-apiserver, whose root errors are on the field "<nil>" too)
BROKEN: list[tuple[str, str, Callable[[Obj], None], str, str]] = [
    ("trainjob-no-runtimeRef", "TrainJob", _without(["spec", "runtimeRef"]),
     "spec.runtimeRef", "Required value"),
    ("rayjob-workergroup-no-groupName", "RayJob", _without(["spec", "rayClusterSpec", "workerGroupSpecs", 0, "groupName"]),
     "spec.rayClusterSpec.workerGroupSpecs[0].groupName", "Required value"),
    ("trainjob-numNodes-string", "TrainJob", _set(["spec", "trainer", "numNodes"], "2"),
     "spec.trainer.numNodes", "must be of type integer"),
    # int-or-string: a quantity may be 1 or "1", not a boolean
    ("trainjob-gpu-quantity-bool", "TrainJob",
     _set(["spec", "trainer", "resourcesPerNode", "limits", "nvidia.com/gpu"], True),
     "spec.trainer.resourcesPerNode.limits.nvidia.com/gpu", "must be of type integer"),
    # CEL on a field: managedBy is one of two controllers
    ("trainjob-managedBy-cel", "TrainJob", _set(["spec", "managedBy"], "dockyard.dev/operator"),
     "spec.managedBy", "Invalid value"),
    # CEL on the root: TrainJob names are RFC 1035 labels (no leading digit)
    ("trainjob-name-cel", "TrainJob", _set(["metadata", "name"], "1st-run"),
     "<nil>", "RFC 1035"),
    # enum
    ("rayjob-deletion-policy-enum", "RayJob",
     _set(["spec", "deletionStrategy"], {"onSuccess": {"policy": "DeleteEverything"}}),
     "spec.deletionStrategy.onSuccess.policy", "Unsupported value"),
    # maxItems (runtimePatches: at most 16)
    ("trainjob-too-many-patches", "TrainJob",
     _set(["spec", "runtimePatches"], [{"manager": f"dockyard.dev/m{i}"} for i in range(17)]),
     "spec.runtimePatches", "Too many"),
]


def broken(kind: str, edit: Callable[[Obj], None]) -> Obj:
    obj = copy.deepcopy(minimal_trainjob() if kind == "TrainJob" else minimal_rayjob())
    edit(obj)
    return obj


def test_every_engine_module_is_pinned_with_its_hash() -> None:
    required = {line.split()[0] for line in (build.CRDS_MODULE / "go.mod").read_text().splitlines()
                if line.startswith("\t")}
    summed = {line.split()[0] for line in (build.CRDS_MODULE / "go.sum").read_text().splitlines()
              if not line.split()[1].endswith("/go.mod")}
    for module, _, _ in ENGINE_KINDS.values():
        assert module in required and module in summed, module


def _pins(go_mod: Path) -> dict[str, str]:
    return {parts[0]: parts[1] for line in go_mod.read_text().splitlines()
            if line.startswith("\t") and len(parts := line.split()) >= 2 and parts[1].startswith("v")}


def test_the_engine_controllers_are_the_versions_whose_crds_are_pinned() -> None:
    # hack/engines builds the controllers the slow test runs; a drift from the CRDs' pins
    # would run a controller against another version's schema.
    crds, controllers = _pins(build.CRDS_MODULE / "go.mod"), _pins(build.REPO / "hack/engines/go.mod")
    for module in ("github.com/kubeflow/trainer/v2", "sigs.k8s.io/jobset"):
        assert controllers[module] == crds[module], module
    # KubeRay's ray-operator has a module of its own (hack/engines/kuberay): same rule.
    kuberay = "github.com/ray-project/kuberay/ray-operator"
    assert _pins(build.REPO / "hack/engines/kuberay/go.mod")[kuberay] == crds[kuberay], kuberay


@pytest.mark.parametrize("kind", list(ENGINE_KINDS))
def test_engine_crds_load(kind: str) -> None:
    crd = engine_crd(kind)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == kind
    assert any(v["storage"] for v in crd["spec"]["versions"])


def test_minimal_trainjob_is_valid() -> None:
    assert validate(minimal_trainjob(), engine_crd("TrainJob")) == []


def test_minimal_rayjob_is_valid() -> None:
    assert validate(minimal_rayjob(), engine_crd("RayJob")) == []


def test_sample_runtime_is_valid() -> None:
    runtime = sample_runtime()
    assert runtime["kind"] == "ClusterTrainingRuntime"
    assert runtime["metadata"]["name"] == minimal_trainjob()["spec"]["runtimeRef"]["name"]
    assert [j["name"] for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]] == ["node"]
    assert validate(runtime, engine_crd("ClusterTrainingRuntime")) == []


def test_schema_defaults_fill_in_the_runtime_kind() -> None:
    """The CRD's defaults: runtimeRef points at a ClusterTrainingRuntime unless told otherwise."""
    spec = defaulted(minimal_trainjob(), engine_crd("TrainJob"))["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    assert spec["managedBy"] == "trainer.kubeflow.org/trainjob-controller"


def test_unknown_fields_are_pruned_not_refused() -> None:
    """As on the API server: an unknown field is dropped (a builder typo would be silently lost,
    which is why the builders' tests compare against the defaulted object)."""
    job = minimal_trainjob()
    job["spec"]["trainer"]["numProcsPerNode"] = 8  # typo of numProcPerNode
    assert validate(job, engine_crd("TrainJob")) == []
    assert "numProcsPerNode" not in defaulted(job, engine_crd("TrainJob"))["spec"]["trainer"]


@pytest.mark.parametrize(("kind", "edit", "field", "word"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_objects_fail_with_the_field(kind: str, edit: Callable[[Obj], None], field: str, word: str) -> None:
    errors = validate(broken(kind, edit), engine_crd(kind))
    assert any(e.startswith(f"{field}:") and word in e for e in errors), errors


def test_wrong_version_or_kind_is_reported() -> None:
    job = minimal_trainjob()
    job["apiVersion"] = "trainer.kubeflow.org/v1"
    assert validate(job, engine_crd("TrainJob"))[0].startswith("apiVersion: version 'v1'")
    assert validate(minimal_rayjob(), engine_crd("TrainJob"))[0].startswith("apiVersion/kind:")
