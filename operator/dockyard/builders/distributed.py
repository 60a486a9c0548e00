"""The engine objects a TrainingRun delegates distributed training to (spec.backend): a Kubeflow
Trainer v2 `TrainJob` or a KubeRay `RayJob`. Same contract as the training Job
(dockyard.builders.training): the same environment (the MLflow run id, the data, lineage), the
MLflow credential from the namespace's Secret, the GPU and placement fields passed through.

Checked against the engines' own CRD schemas (tests/plugins/engine_crds.py: pinned module
versions from the Go module proxy): Trainer v2.3.0, KubeRay v1.6.2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from ..api.backend import RAY_ARG_RULE, RAYJOB_API, TRAINJOB_API, unsafe_ray_args
from ..api.common import ResourceRequirements
from ..api.dataset import DatasetSpec
from ..api.trainingrun import TrainingRunSpec
from ..config import OperatorConfig
from ..labels import (
    ATTEMPT_LABEL,
    TRAINER_COMPONENT,
    child_name,
    owner_reference,
    stamp_spec_hash,
    standard_labels,
)
from ..registry_access import PASSWORD_KEY, USERNAME_KEY, WORKLOAD_SECRET
from .pods import (
    container_security_context,
    env_list,
    mlflow_env_from,
    pod_scheduling,
    pod_security_context,
    tmp_volume,
)
from .training import dataset_access, training_env

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Field manager of our runtimePatches entry (Trainer keys the list by it; domain-prefixed).
PATCH_MANAGER = "dockyard.dev/operator"
# The replicated Job of Trainer's torch/mpi/jax runtimes whose Pods train, and its container.
TRAINER_REPLICATED_JOB = "node"
TRAINER_CONTAINER = "node"
# What the kubelet accepts as an environment variable name (envFrom skips other keys).
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
RAYJOB_NAME_MAX = 47  # KubeRay refuses longer RayJob names (it derives Service names from them)


def engine_object_name(run_name: str, attempt: int, kind: str) -> str:
    return child_name(run_name, f"train-{attempt}", max_length=RAYJOB_NAME_MAX if kind == "RayJob" else 63)


def _metadata(owner: dict[str, Any], spec: TrainingRunSpec, name: str, attempt: int) -> dict[str, Any]:
    meta = owner["metadata"]
    extra = {ATTEMPT_LABEL: str(attempt)}
    if spec.backend and spec.backend.queue_name:
        extra[QUEUE_LABEL] = spec.backend.queue_name
    labels = standard_labels(owner_kind=owner["kind"], owner_name=meta["name"], component=TRAINER_COMPONENT,
                             extra=extra)
    return {"name": name, "namespace": meta["namespace"], "labels": labels,
            "ownerReferences": [owner_reference(owner)]}


def _credential_env(cfg: OperatorConfig) -> list[dict[str, Any]]:
    """The MLflow credential as env entries (TrainJob's trainer takes env, not envFrom)."""
    refs = mlflow_env_from(cfg)
    if not refs:
        return []
    secret = refs[0]["secretRef"]
    optional = bool(secret.get("optional"))
    keys = [USERNAME_KEY, PASSWORD_KEY] if secret["name"] == WORKLOAD_SECRET else [
        USERNAME_KEY, PASSWORD_KEY, "MLFLOW_TRACKING_TOKEN"]
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": key,
                                                         **({"optional": True} if optional else {})}}}
            for key in keys]


def _command(spec: TrainingRunSpec) -> list[str]:
    custom = spec.trainer.custom
    if custom is None:
        return ["dockyard", "train"]
    return [*(custom.command or []), *(custom.args or [])]


def _image(spec: TrainingRunSpec, cfg: OperatorConfig) -> str:
    return spec.trainer.custom.image if spec.trainer.custom else (spec.trainer.image or cfg.runtime_image)


def _env(owner: dict[str, Any], spec: TrainingRunSpec, dataset: DatasetSpec, *, attempt: int, run_id: str,
         experiment_id: str, dataset_version: str, cfg: OperatorConfig) -> list[dict[str, Any]]:
    env = training_env(owner, spec, dataset, attempt=attempt, run_id=run_id, experiment_id=experiment_id,
                       dataset_version=dataset_version, cfg=cfg)
    env["DOCKYARD_BACKEND"] = spec.backend_type()
    user = [{"name": e.name, "value": e.value} for e in (spec.trainer.custom.env if spec.trainer.custom else None)
            or [] if e.name not in env]
    return user + env_list(env) + _credential_env(cfg)


def _resources(resources: ResourceRequirements | None) -> dict[str, Any]:
    return resources.to_container_resources() if resources else {}


def _secret_env(secret_name: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """What `envFrom: secretRef` gives a container, key by key (TrainJob's trainer has no
    envFrom); keys that are not valid variable names are skipped, as envFrom does."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
            for key in sorted(keys) if ENV_NAME.fullmatch(key)]


def build_trainjob(owner: dict[str, Any], spec: TrainingRunSpec, dataset: DatasetSpec, *, attempt: int, run_id: str,
                   experiment_id: str, dataset_version: str, cfg: OperatorConfig,
                   dataset_secret_keys: Sequence[str] = ()) -> dict[str, Any]:
    """A TrainJob running the trainer on `numNodes` nodes of the referenced runtime.

    `dataset_secret_keys`: the keys of the Dataset's credentials Secret, which become env entries
    one by one (the operator reads the key names, never the values, before building)."""
    assert spec.backend is not None and spec.backend.train_job is not None
    settings = spec.backend.train_job
    api_version, kind = TRAINJOB_API
    env = _env(owner, spec, dataset, attempt=attempt, run_id=run_id, experiment_id=experiment_id,
               dataset_version=dataset_version, cfg=cfg)
    secret = dataset.source.credentials_secret_ref
    if secret is not None:
        env += _secret_env(secret.name, dataset_secret_keys)
    trainer: dict[str, Any] = {
        "image": _image(spec, cfg),
        "command": _command(spec),
        "env": env,
        "numNodes": settings.num_nodes,
    }
    if settings.num_proc_per_node:
        trainer["numProcPerNode"] = settings.num_proc_per_node
    resources = _resources(settings.resources_per_node or spec.resources)
    if resources:
        trainer["resourcesPerNode"] = resources
    body: dict[str, Any] = {
        "runtimeRef": {"name": settings.runtime_ref.name, "apiGroup": api_version.split("/")[0],
                       "kind": settings.runtime_ref.kind},
        "trainer": trainer,
    }
    if spec.active_deadline_seconds:
        body["activeDeadlineSeconds"] = spec.active_deadline_seconds
    # The training Pods, through the runtime's `node` replicated Job: the Dataset's volume and a
    # writable /tmp (the root filesystem is read-only), Pod Security `restricted` contexts, and
    # nodeSelector / tolerations / affinity.
    volumes, mounts, _ = dataset_access(dataset)
    tmp_vol, tmp_mount = tmp_volume()
    pod = {
        **pod_scheduling(spec),
        "securityContext": pod_security_context(),
        "volumes": [*volumes, tmp_vol],
        "containers": [{"name": TRAINER_CONTAINER, "volumeMounts": [*mounts, tmp_mount],
                        "securityContext": container_security_context()}],
    }
    body["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": TRAINER_REPLICATED_JOB, "template": {"spec": {"template": {"spec": pod}}}}]}}}}]
    obj = {"apiVersion": api_version, "kind": kind,
           "metadata": _metadata(owner, spec, engine_object_name(owner["metadata"]["name"], attempt, kind), attempt),
           "spec": body}
    return stamp_spec_hash(obj)


def build_rayjob(owner: dict[str, Any], spec: TrainingRunSpec, dataset: DatasetSpec, *, attempt: int, run_id: str,
                 experiment_id: str, dataset_version: str, cfg: OperatorConfig) -> dict[str, Any]:
    """A RayJob: the entrypoint runs as the Ray driver on a cluster made for the job (head plus
    one worker group) or on an existing RayCluster."""
    assert spec.backend is not None and spec.backend.ray_job is not None
    settings = spec.backend.ray_job
    api_version, kind = RAYJOB_API
    entrypoint = settings.entrypoint or _command(spec)
    # The spec holds every argument to RAY_ENTRYPOINT_ARG's characters (api/backend.py): joined
    # with spaces they reach the driver unchanged through KubeRay's bash and Ray's /bin/sh,
    # where quoting would not.
    if unsafe_ray_args(entrypoint):
        raise ValueError(f"RayJob entrypoint arguments must be {RAY_ARG_RULE}")
    body: dict[str, Any] = {
        "entrypoint": " ".join(entrypoint),
        "shutdownAfterJobFinishes": settings.shutdown_after_job_finishes if not settings.cluster_name else False,
        # HTTPMode: KubeRay submits the job to the cluster's dashboard itself. K8sJobMode would
        # add KubeRay's submitter Pod, whose default template Pod Security "restricted" refuses.
        "submissionMode": "HTTPMode",
    }
    if spec.active_deadline_seconds:
        body["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if settings.cluster_name:
        # An existing cluster keeps its own Pods: the run's coordinates go as the job's runtime
        # environment (no credential: that cluster must hold its own).
        body["clusterSelector"] = {"ray.io/cluster": settings.cluster_name}
        plain = training_env(owner, spec, dataset, attempt=attempt, run_id=run_id, experiment_id=experiment_id,
                             dataset_version=dataset_version, cfg=cfg)
        body["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": {**plain, "DOCKYARD_BACKEND": "rayjob"}}, sort_keys=True)
    else:
        env = _env(owner, spec, dataset, attempt=attempt, run_id=run_id, experiment_id=experiment_id,
                   dataset_version=dataset_version, cfg=cfg)
        placement = pod_scheduling(spec)
        volumes, mounts, env_from = dataset_access(dataset)
        tmp_vol, tmp_mount = tmp_volume()

        def pod(name: str, resources: ResourceRequirements | None) -> dict[str, Any]:
            container: dict[str, Any] = {
                "name": name, "image": _image(spec, cfg), "env": env, "envFrom": env_from,
                "volumeMounts": [*mounts, tmp_mount], "securityContext": container_security_context()}
            if _resources(resources):
                container["resources"] = _resources(resources)
            return {"spec": {**placement, "securityContext": pod_security_context(), "volumes": [*volumes, tmp_vol],
                             "containers": [container]}}

        workers = settings.workers or None
        cluster: dict[str, Any] = {
            "headGroupSpec": {"rayStartParams": {}, "template": pod("ray-head", settings.head_resources)}}
        if workers is not None:
            cluster["workerGroupSpecs"] = [{
                "groupName": "workers", "replicas": workers.replicas, "minReplicas": workers.replicas,
                "maxReplicas": workers.replicas, "rayStartParams": {},
                "template": pod("ray-worker", workers.resources or spec.resources)}]
        body["rayClusterSpec"] = cluster
    obj = {"apiVersion": api_version, "kind": kind,
           "metadata": _metadata(owner, spec, engine_object_name(owner["metadata"]["name"], attempt, kind), attempt),
           "spec": body}
    return stamp_spec_hash(obj)


def build_engine_object(owner: dict[str, Any], spec: TrainingRunSpec, dataset: DatasetSpec, *,
                        dataset_secret_keys: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
    if spec.backend_type() == "trainjob":
        return build_trainjob(owner, spec, dataset, dataset_secret_keys=dataset_secret_keys, **kwargs)
    return build_rayjob(owner, spec, dataset, **kwargs)
