"""The training engines' own CRDs (Kubeflow Trainer v2, KubeRay, JobSet), from their Go modules.

``TrainingRun.spec.backend`` renders a Kubeflow Trainer ``TrainJob`` or a KubeRay ``RayJob``;
the tests check those objects against the engines' real CRDs. Nothing is copied into the
repository: the modules are pinned in ``hack/controlplane/crds/go.mod`` (with the routing CRDs'
modules) and downloaded from the Go module proxy at test time; go.sum checks every download.
See docs/distributed-training.md, "Where the engines' CRDs come from".

API:
  ENGINE_KINDS            kind -> (module path, file inside the module, CRD name)
  requires_go             mark: skip when ``go`` is not on PATH
  module_dir(module)      the module's directory at the pinned version (downloaded once)
  engine_crd(kind)        the CRD of TrainJob, ClusterTrainingRuntime, TrainingRuntime, RayJob,
                          RayCluster, RayService or JobSet, as a dict (a fresh copy per call)
  sample_runtime()        Trainer's ``torch-distributed`` ClusterTrainingRuntime
  validate(obj, crd)      the API server's structural-schema + CEL validation of ``obj``
                          (create: rules with ``oldSelf`` do not run); error strings with paths
  install_engine_crds(cluster, kinds=ENGINE_KINDS)
                          create the CRDs in a real API server and wait until Established

Fixture:
  engine_crds_installed   session scope: the seven CRDs installed in ``kube_cluster``; yields
                          {kind: CRD name}
"""

from __future__ import annotations

import copy
import functools
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.localcluster import build

Obj = dict[str, Any]

_TRAINER = "github.com/kubeflow/trainer/v2"
_KUBERAY = "github.com/ray-project/kuberay/ray-operator"
_JOBSET = "sigs.k8s.io/jobset"

ENGINE_KINDS: dict[str, tuple[str, str, str]] = {
    "TrainJob": (_TRAINER, "manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml",
                 "trainjobs.trainer.kubeflow.org"),
    "ClusterTrainingRuntime": (_TRAINER, "manifests/base/crds/trainer.kubeflow.org_clustertrainingruntimes.yaml",
                               "clustertrainingruntimes.trainer.kubeflow.org"),
    "TrainingRuntime": (_TRAINER, "manifests/base/crds/trainer.kubeflow.org_trainingruntimes.yaml",
                        "trainingruntimes.trainer.kubeflow.org"),
    "RayJob": (_KUBERAY, "config/crd/bases/ray.io_rayjobs.yaml", "rayjobs.ray.io"),
    "RayCluster": (_KUBERAY, "config/crd/bases/ray.io_rayclusters.yaml", "rayclusters.ray.io"),
    # Not made by Dockyard, but KubeRay's ray-operator watches it and exits without it.
    "RayService": (_KUBERAY, "config/crd/bases/ray.io_rayservices.yaml", "rayservices.ray.io"),
    "JobSet": (_JOBSET, "config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml", "jobsets.jobset.x-k8s.io"),
}
SAMPLE_RUNTIME = (_TRAINER, "manifests/base/runtimes/torch_distributed.yaml")
# Set on the CRDs we create, so a cluster holding another pin's CRD gets ours instead.
SOURCE_ANNOTATION = "dockyard.dev/engine-crd-source"

requires_go = pytest.mark.skipif(
    shutil.which("go") is None, reason="needs Go: the engines' CRDs come from the Go module proxy"
)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go: the engines' CRDs come from the Go module proxy (go mod download)")
    return go


def module_dir(module: str) -> Path:
    """The directory of ``module`` at the version hack/controlplane/crds/go.mod pins (downloaded
    once per session; go.sum checks it)."""
    return _module_dirs()[module][1]


def module_version(module: str) -> str:
    return _module_dirs()[module][0]


@functools.cache
def _module_dirs() -> dict[str, tuple[str, Path]]:
    _go()
    try:
        return build.crd_module_dirs(m for m, _, _ in ENGINE_KINDS.values())
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _load_yaml(path: Path) -> list[Obj]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are up to 1.3 MB of YAML
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


@functools.cache
def _crd(kind: str) -> Obj:
    module, rel, name = ENGINE_KINDS[kind]
    docs = [d for d in _load_yaml(module_dir(module) / rel) if d.get("kind") == "CustomResourceDefinition"]
    crd = next((d for d in docs if d["metadata"]["name"] == name), None)
    if crd is None:
        pytest.fail(f"{module}: {rel} holds no CRD {name}", pytrace=False)
    assert crd["spec"]["names"]["kind"] == kind, (name, crd["spec"]["names"]["kind"])
    return crd


def engine_crd(kind: str) -> Obj:
    """The engine's CRD for ``kind`` (TrainJob, ClusterTrainingRuntime, TrainingRuntime, RayJob,
    RayCluster, RayService, JobSet) at the pinned version, as a dict the caller may modify."""
    if kind not in ENGINE_KINDS:
        raise KeyError(f"{kind!r} is not an engine kind; known: {', '.join(ENGINE_KINDS)}")
    return copy.deepcopy(_crd(kind))


def sample_runtime() -> Obj:
    """Kubeflow Trainer's ``torch-distributed`` ClusterTrainingRuntime (one replicatedJob
    ``node`` with container ``node``), from the pinned trainer module."""
    module, rel = SAMPLE_RUNTIME
    (doc,) = _load_yaml(module_dir(module) / rel)
    return doc


def validate(obj: Obj, crd: Obj) -> list[str]:
    """Validate ``obj`` against ``crd`` as the API server does on create: prune unknown fields,
    apply defaults, check the structural schema of the object's version (types, required,
    enums, patterns, bounds, list sizes and list-map keys, preserve-unknown-fields, nullable,
    int-or-string) and then the ``x-kubernetes-validations`` CEL rules that do not mention
    ``oldSelf`` (cel-python). Reuses the API emulator's validator (tests/kubeapi/validation.py),
    the one that checks Dockyard's own CRDs.

    Returns error strings that start with the field path, e.g.
    ``spec.runtimeRef: Required value``; [] when the object would be accepted.
    """
    from tests.kubeapi.validation import validate_custom_resource

    spec = crd["spec"]
    group, _, version = (obj.get("apiVersion") or "").rpartition("/")
    if group != spec["group"] or obj.get("kind") != spec["names"]["kind"]:
        return [f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')} is not served by CRD "
                f"{crd['metadata']['name']}"]
    served = [v["name"] for v in spec["versions"] if v.get("served")]
    if version not in served:
        return [f"apiVersion: version {version!r} of {crd['metadata']['name']} is not served "
                f"(served: {', '.join(served)})"]
    _, errors = validate_custom_resource(crd, obj)
    return errors


def defaulted(obj: Obj, crd: Obj) -> Obj:
    """``obj`` pruned and defaulted by ``crd``'s schema, as the API server stores it."""
    from tests.kubeapi.validation import validate_custom_resource

    return validate_custom_resource(crd, obj)[0]


# ------------------------------------------------------------------ the real API server

_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _source(kind: str) -> str:
    module, rel, _ = ENGINE_KINDS[kind]
    return f"{module}@{module_version(module)}/{rel}"


def install_engine_crds(cluster: Any, kinds: Iterable[str] = ENGINE_KINDS, timeout: float = 60.0) -> dict[str, str]:
    """Create the engines' CRDs in ``cluster`` (a tests.plugins.kube.KubeCluster) and wait until
    each is Established and served; returns {kind: CRD name}.

    A plain POST: most of these CRDs are over 256 KiB, too big for client-side apply's
    last-applied annotation. An existing CRD of the same pin (our source annotation) is left
    alone; one from another source (another pin, or installed by someone else) is replaced.
    """
    names: dict[str, str] = {}
    for kind in kinds:
        crd = engine_crd(kind)
        name = crd["metadata"]["name"]
        crd["metadata"].setdefault("annotations", {})[SOURCE_ANNOTATION] = _source(kind)
        try:
            cluster.request("POST", _CRD_PATH, crd)
        except ApiException as e:
            if e.status != 409:
                raise AssertionError(f"the API server refused CRD {name} ({_source(kind)}): "
                                     f"{e.status} {e.body}") from e
            live = cluster.request("GET", f"{_CRD_PATH}/{name}")
            if (live["metadata"].get("annotations") or {}).get(SOURCE_ANNOTATION) != _source(kind):
                crd["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                cluster.request("PUT", f"{_CRD_PATH}/{name}", crd)
        names[kind] = name
    deadline = time.monotonic() + timeout
    for kind, name in names.items():
        while True:
            conds = (cluster.request("GET", f"{_CRD_PATH}/{name}").get("status") or {}).get("conditions") or []
            status = {c["type"]: c for c in conds}
            if (status.get("Established") or {}).get("status") == "True":
                break
            bad = status.get("NamesAccepted")
            if bad and bad.get("status") == "False":
                raise AssertionError(f"CRD {name}: names not accepted: {bad.get('message')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} ({kind}) not Established after {timeout}s: {conds}")
            time.sleep(0.2)
        cluster.wait_crd_served(name, deadline)
    return names


@pytest.fixture(scope="session")
def engine_crds_installed(kube_cluster: Any) -> Iterator[dict[str, str]]:
    """The seven engine CRDs in the session's cluster, Established. Not removed afterwards (objects
    of them live in the tests' namespaces, which are deleted)."""
    yield install_engine_crds(kube_cluster)
