"""Jobs for the training side: the Dataset profiling Job and the TrainingRun training Job.

The env var names here are the contract with `dockyard profile` / `dockyard train` and with
bring-your-own trainers (documented in docs/training-contract.md).
"""

from __future__ import annotations

import json
from typing import Any

from ..api.dataset import DatasetSpec
from ..api.sweep import Trial
from ..api.trainingrun import TrainingRunSpec
from ..config import OperatorConfig
from ..labels import (
    ATTEMPT_LABEL,
    PROFILER_COMPONENT,
    SOURCE_REVISION_ANNOTATION,
    TRAINER_COMPONENT,
    TRIAL_LABEL,
    child_name,
    owner_reference,
    pod_template_labels,
    stamp_spec_hash,
    standard_labels,
)
from ..sweep import trial_params
from .pods import (
    TERMINATION_LOG,
    container_security_context,
    env_list,
    mlflow_ca,
    mlflow_env_from,
    pod_scheduling,
    pod_spec_common,
    tmp_volume,
)

DATA_VOLUME = "data"


def profile_job_name(dataset_name: str, generation: int, refresh: int) -> str:
    """Deterministic: one profiling Job per (generation, scheduled refresh)."""
    return child_name(dataset_name, f"profile-g{generation}-r{refresh}")


def training_job_name(run_name: str, attempt: int, trial: int | None = None) -> str:
    """`<run>-train-<attempt>`, or `<run>-train-<attempt>-t<trial>` for a sweep's trial."""
    return child_name(run_name, f"train-{attempt}" + (f"-t{trial}" if trial is not None else ""))


def dataset_access(spec: DatasetSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, envFrom) a container needs to read the Dataset's source."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env_from: list[dict[str, Any]] = []
    source = spec.source
    if source.volume is not None:
        vol = source.volume
        if vol.persistent_volume_claim is not None:
            volumes.append({
                "name": DATA_VOLUME,
                "persistentVolumeClaim": {"claimName": vol.persistent_volume_claim.name, "readOnly": True},
            })
        elif vol.config_map is not None:
            volumes.append({"name": DATA_VOLUME, "configMap": {"name": vol.config_map.name}})
        mounts.append({"name": DATA_VOLUME, "mountPath": vol.mount_path, "readOnly": True})
    if source.credentials_secret_ref is not None:
        env_from.append({"secretRef": {"name": source.credentials_secret_ref.name}})
    return volumes, mounts, env_from


def _job(
    *,
    owner: dict[str, Any],
    name: str,
    component: str,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    cfg: OperatorConfig,
    backoff_limit: int,
    active_deadline_seconds: int | None,
    extra_labels: dict[str, str] | None = None,
    scheduling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta = owner["metadata"]
    labels = standard_labels(owner_kind=owner["kind"], owner_name=meta["name"], component=component,
                             extra=extra_labels)
    tmp_vol, tmp_mount = tmp_volume()
    container = {
        **container,
        "imagePullPolicy": cfg.image_pull_policy,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": [*container.get("volumeMounts", []), tmp_mount],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": pod_template_labels(labels)},
            "spec": {
                **pod_spec_common(cfg),
                **(scheduling or {}),
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [*volumes, tmp_vol],
            },
        },
    }
    if active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": job_spec,
    }
    return stamp_spec_hash(job)


def build_profile_job(
    owner: dict[str, Any], spec: DatasetSpec, *, job_name: str, cfg: OperatorConfig,
    source_revision: str | None = None,
) -> dict[str, Any]:
    """The Job that runs `dockyard profile` over the Dataset's source. ``source_revision``: the
    resourceVersion of the ConfigMap it reads, recorded so an edit is noticed at once."""
    volumes, mounts, env_from = dataset_access(spec)
    env = {
        "DOCKYARD_DATASET_NAME": owner["metadata"]["name"],
        "DOCKYARD_DATASET_URI": spec.source.uri,
        "DOCKYARD_DATASET_FORMAT": spec.source.format,
        "DOCKYARD_DATASET_SPEC": json.dumps(spec.to_api(), sort_keys=True),
        "DOCKYARD_TERMINATION_LOG": TERMINATION_LOG,
    }
    container: dict[str, Any] = {
        "name": "profile",
        "image": spec.profiler_image or cfg.runtime_image,
        "command": ["dockyard", "profile"],
        "env": env_list(env),
        "envFrom": env_from,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    job = _job(owner=owner, name=job_name, component=PROFILER_COMPONENT, container=container, volumes=volumes,
               cfg=cfg, backoff_limit=0, active_deadline_seconds=3600)
    if source_revision is not None:
        job["metadata"]["annotations"][SOURCE_REVISION_ANNOTATION] = source_revision
    return job


def training_env(
    owner: dict[str, Any],
    spec: TrainingRunSpec,
    dataset: DatasetSpec,
    *,
    attempt: int,
    run_id: str,
    experiment_id: str,
    dataset_version: str,
    cfg: OperatorConfig,
    trial: Trial | None = None,
) -> dict[str, str]:
    meta = owner["metadata"]
    target = dataset.data_schema.target if dataset.data_schema and dataset.data_schema.target else ""
    env = {
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri_for_pods,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "DOCKYARD_DATASET_NAME": spec.dataset_ref.name,
        "DOCKYARD_DATASET_URI": dataset.source.uri,
        "DOCKYARD_DATASET_FORMAT": dataset.source.format,
        "DOCKYARD_DATASET_VERSION": dataset_version,
        "DOCKYARD_TARGET": target,
        "DOCKYARD_MODEL_NAME": spec.model_name,
        "DOCKYARD_TRAININGRUN_NAMESPACE": meta["namespace"],
        "DOCKYARD_TRAININGRUN_NAME": meta["name"],
        "DOCKYARD_TRAININGRUN_UID": meta["uid"],
        "DOCKYARD_ATTEMPT": str(attempt),
        "DOCKYARD_TERMINATION_LOG": TERMINATION_LOG,
    }
    est = spec.trainer.estimator
    fixed = dict(est.hyperparameters or {}) if est is not None else {}
    hyper = trial_params(fixed, trial.parameters) if trial is not None else fixed
    if est is not None:
        env.update({
            "DOCKYARD_ESTIMATOR": est.class_path,
            "DOCKYARD_TASK": est.task,
            "DOCKYARD_TEST_FRACTION": str(est.test_fraction),
            "DOCKYARD_RANDOM_SEED": str(est.random_seed),
        })
    if est is not None or trial is not None:  # a custom trainer gets a trial's values the same way
        env["DOCKYARD_HYPERPARAMETERS"] = json.dumps(hyper, sort_keys=True)
        for key, value in sorted(hyper.items()):
            env[f"DOCKYARD_HP_{key.upper()}"] = "" if value is None else json.dumps(value).strip('"')
    if trial is not None:
        env["DOCKYARD_TRIAL"] = str(trial.index)
    return env


def build_training_job(
    owner: dict[str, Any],
    spec: TrainingRunSpec,
    dataset: DatasetSpec,
    *,
    attempt: int,
    run_id: str,
    experiment_id: str,
    dataset_version: str,
    cfg: OperatorConfig,
    trial: Trial | None = None,
) -> dict[str, Any]:
    """The Job that trains one attempt (or one trial of its sweep): built-in `dockyard train`
    or the user's own container."""
    volumes, mounts, env_from = dataset_access(spec=dataset)
    env = training_env(owner, spec, dataset, attempt=attempt, run_id=run_id, experiment_id=experiment_id,
                       dataset_version=dataset_version, cfg=cfg, trial=trial)
    custom = spec.trainer.custom
    container: dict[str, Any]
    if custom is not None:
        # User env first so the contract variables win on a name clash.
        user_env = [{"name": e.name, "value": e.value} for e in custom.env or [] if e.name not in env]
        container = {"name": "train", "image": custom.image, "env": user_env + env_list(env)}
        if custom.command:
            container["command"] = list(custom.command)
        if custom.args:
            container["args"] = list(custom.args)
    else:
        container = {
            "name": "train",
            "image": spec.trainer.image or cfg.runtime_image,
            "command": ["dockyard", "train"],
            "env": env_list(env),
        }
    container["envFrom"] = env_from + mlflow_env_from(cfg)
    ca_volumes, ca_mounts, ca_env = mlflow_ca(cfg)
    container["env"] += ca_env
    container["volumeMounts"] = mounts + ca_mounts
    volumes = volumes + ca_volumes
    resources = spec.resources.to_container_resources() if spec.resources else {}
    if resources:
        container["resources"] = resources
    return _job(
        owner=owner,
        name=training_job_name(owner["metadata"]["name"], attempt, trial.index if trial is not None else None),
        component=TRAINER_COMPONENT,
        container=container,
        volumes=volumes,
        cfg=cfg,
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds,
        extra_labels={ATTEMPT_LABEL: str(attempt), **({TRIAL_LABEL: str(trial.index)} if trial is not None else {})},
        scheduling=pod_scheduling(spec),
    )
