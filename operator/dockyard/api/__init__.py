"""Dockyard API types (group dockyard.dev, version v1alpha1) as pydantic v2 models."""

from .common import API_VERSION, GROUP, VERSION, Condition
from .dataset import DatasetSpec, DatasetStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Variant
from .trainingrun import TrainingRunSpec, TrainingRunStatus

KINDS = {
    "Dataset": (DatasetSpec, DatasetStatus),
    "TrainingRun": (TrainingRunSpec, TrainingRunStatus),
    "ModelDeployment": (ModelDeploymentSpec, ModelDeploymentStatus),
}

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "DatasetSpec",
    "DatasetStatus",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "TrainingRunSpec",
    "TrainingRunStatus",
    "Variant",
]
