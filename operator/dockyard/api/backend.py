"""`TrainingRun.spec.backend`: who runs training. `job` (default) is a Kubernetes Job Dockyard
makes; `trainjob` delegates to Kubeflow Trainer v2 (`TrainJob`, trainer.kubeflow.org/v1alpha1)
and `rayjob` to KubeRay (`RayJob`, ray.io/v1), for training on several nodes. Dockyard does not
run a distributed runtime of its own; whichever engine runs the workers, the MLflow contract is
the same (the operator opens the run, the workers get its id, rank 0 logs the model) and so are
exactly-once registration, the quality gate, the alias and lineage (docs/distributed-training.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import DNS_LABEL, DNS_SUBDOMAIN, LABEL_VALUE, ApiModel, ResourceRequirements, cel, schema_extra

TRAINJOB_API = ("trainer.kubeflow.org/v1alpha1", "TrainJob")
RAYJOB_API = ("ray.io/v1", "RayJob")

# A RayJob's entrypoint is one string that Ray's job manager runs with /bin/sh. Dockyard submits
# in HTTPMode (KubeRay sends it to the dashboard as is), but in KubeRay's default K8sJobMode it
# goes through two shells: the submitter Pod's `bash -c "ray job submit ... -- <entrypoint>"`,
# then `ray job submit` re-joins the words bash left (subprocess.list2cmdline) for /bin/sh, and
# no quoting survives both. Each argument is held to characters that no shell or list2cmdline
# treats specially and the arguments are joined with spaces: what the user wrote is what the
# driver gets, whichever way the job is submitted.
RAY_ENTRYPOINT_ARG = r"^[A-Za-z0-9_@%+=:,./-]+$"
_RAY_ARG = re.compile(RAY_ENTRYPOINT_ARG)
# KubeRay starts the job's own cluster with `ray start` in the training image: Dockyard's runtime
# image has no Ray, so that cluster needs the user's image.
RAY_IMAGE_NEEDED = ("a RayJob's own Ray cluster runs the training image, which must contain Ray: set "
                    "trainer.custom.image or trainer.image (Dockyard's runtime image has no Ray)")
RAY_ARG_RULE = "letters, digits and _@%+=:,./- only (KubeRay and Ray pass it through two shells)"


def unsafe_ray_args(args: list[str]) -> list[int]:
    """Indexes of the arguments a RayJob entrypoint cannot carry unchanged."""
    return [i for i, arg in enumerate(args) if not _RAY_ARG.match(arg)]


class RuntimeRef(ApiModel):
    """The Kubeflow Trainer runtime (the distributed setup: torch, mpi, jax, ...) to use."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Runtime name, e.g. torch-distributed.")
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        default="ClusterTrainingRuntime",
        description="ClusterTrainingRuntime (cluster-wide) or TrainingRuntime (this namespace).")


class TrainJobBackend(ApiModel):
    """A Kubeflow Trainer v2 TrainJob."""

    runtime_ref: RuntimeRef = Field(description="The training runtime.")
    num_nodes: int = Field(default=1, ge=1, le=1000, description="Training nodes (Pods).")
    num_proc_per_node: int | None = Field(
        default=None, ge=1, le=1024, description="Processes per node (e.g. one per GPU); default the runtime's.")
    resources_per_node: ResourceRequirements | None = Field(
        default=None, description="Resources of each node's trainer container (gpus: nvidia.com/gpu).")


class RayWorkers(ApiModel):
    """The Ray worker group of a RayJob's own cluster."""

    replicas: int = Field(default=1, ge=0, le=1000, description="Worker Pods.")
    resources: ResourceRequirements | None = Field(default=None, description="Resources of each worker.")


class RayJobBackend(ApiModel):
    """A KubeRay RayJob: a Ray cluster made for the job (default), or an existing one."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("!has(self.clusterName) || !has(self.workers)",
                "workers describe a cluster made for the job; an existing cluster (clusterName) has its own"),
        )
    )

    entrypoint: list[Annotated[str, Field(pattern=RAY_ENTRYPOINT_ARG, max_length=1024)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="The driver's command, one argument per item, each of " + RAY_ARG_RULE + "; default "
        "`dockyard train`, or trainer.custom's command and args.")
    cluster_name: str | None = Field(
        default=None, pattern=DNS_LABEL, max_length=63,
        description="Run on this existing RayCluster (same namespace) instead of one made for the job.")
    workers: RayWorkers | None = Field(default=None, description="Worker group of the job's own cluster.")
    head_resources: ResourceRequirements | None = Field(default=None, description="Resources of the head Pod.")
    shutdown_after_job_finishes: bool = Field(
        default=True, description="Delete the job's own Ray cluster when the job ends.")


class Backend(ApiModel):
    """Who runs training: a Job (default), a Kubeflow Trainer TrainJob or a KubeRay RayJob."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("self.type != 'trainjob' || has(self.trainJob)", "type trainjob needs trainJob", ".trainJob"),
            cel("self.type != 'rayjob' || has(self.rayJob)", "type rayjob needs rayJob", ".rayJob"),
            cel("(self.type == 'trainjob') == has(self.trainJob) && (self.type == 'rayjob') == has(self.rayJob)",
                "set only the settings of the chosen type"),
        )
    )

    type: Literal["job", "trainjob", "rayjob"] = Field(default="job", description="job, trainjob or rayjob.")
    train_job: TrainJobBackend | None = Field(default=None, description="Kubeflow Trainer v2 settings.")
    ray_job: RayJobBackend | None = Field(default=None, description="KubeRay settings.")
    queue_name: str | None = Field(
        default=None, pattern=LABEL_VALUE, max_length=63,
        description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name): Kueue admits the whole job at once.")

    @model_validator(mode="after")
    def _settings_match_type(self) -> Backend:
        if self.type == "trainjob" and self.train_job is None:
            raise ValueError("type trainjob needs trainJob")
        if self.type == "rayjob" and self.ray_job is None:
            raise ValueError("type rayjob needs rayJob")
        if (self.type != "trainjob" and self.train_job is not None) or (self.type != "rayjob" and
                                                                         self.ray_job is not None):
            raise ValueError("set only the settings of the chosen type")
        if self.ray_job and self.ray_job.cluster_name and self.ray_job.workers:
            raise ValueError("workers describe a cluster made for the job; an existing cluster (clusterName) "
                             "has its own")
        return self

    def api(self) -> tuple[str, str] | None:
        """(apiVersion, kind) of the engine's object, None for a plain Job."""
        return {"trainjob": TRAINJOB_API, "rayjob": RAYJOB_API}.get(self.type)
