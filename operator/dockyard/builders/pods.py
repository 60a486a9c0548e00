"""Pod-level settings every Dockyard workload shares (one place for security defaults)."""

from __future__ import annotations

from typing import Any

from ..api.common import Scheduling
from ..config import OperatorConfig
from ..registry_access import WORKLOAD_SECRET

RUN_AS_USER = 1000
TERMINATION_LOG = "/dev/termination-log"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


# Serving and router containers keep answering for a few seconds after their Pod is deleted:
# endpoints and kube-proxy (or a mesh) learn of the deletion asynchronously, and nginx and
# MLServer stop at once on SIGTERM, so without the pause a rollout drops requests. The sleep
# action needs no binary in the image (Kubernetes 1.30+: PodLifecycleSleepAction).
DRAIN_SECONDS = 5


def drain_lifecycle() -> dict[str, Any]:
    return {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """An emptyDir at /tmp: the root filesystem is read-only."""
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}


def env_list(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def mlflow_env_from(cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Credentials for MLflow, only ever through a Secret of the workload's namespace: the
    namespace's workload user (embedded MLflow with auth; the operator creates the Secret
    before any Pod that needs it, and a Pod must not start without it), or the Secret an
    external MLflow's users copy there (optional: that MLflow may need none)."""
    if cfg.mlflow_workload_credentials:
        return [{"secretRef": {"name": WORKLOAD_SECRET}}]
    if not cfg.mlflow_credentials_secret:
        return []
    return [{"secretRef": {"name": cfg.mlflow_credentials_secret, "optional": True}}]


MLFLOW_CA_VOLUME = "mlflow-ca"
MLFLOW_CA_DIR = "/etc/dockyard/mlflow-ca"
MLFLOW_CA_KEY = "ca.crt"


def mlflow_ca(cfg: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, env) that make a Pod's MLflow client trust an external MLflow's
    private CA: the ConfigMap DOCKYARD_MLFLOW_CA_CONFIGMAP (key ca.crt) of the Pod's namespace,
    named in MLFLOW_TRACKING_SERVER_CERT_PATH, which scopes it to MLflow's requests only
    (REQUESTS_CA_BUNDLE would replace the public CAs for every other HTTPS call too)."""
    if not cfg.mlflow_ca_configmap:
        return [], [], []
    volume = {"name": MLFLOW_CA_VOLUME, "configMap": {"name": cfg.mlflow_ca_configmap,
                                                      "items": [{"key": MLFLOW_CA_KEY, "path": MLFLOW_CA_KEY}]}}
    mount = {"name": MLFLOW_CA_VOLUME, "mountPath": MLFLOW_CA_DIR, "readOnly": True}
    env = {"name": "MLFLOW_TRACKING_SERVER_CERT_PATH", "value": f"{MLFLOW_CA_DIR}/{MLFLOW_CA_KEY}"}
    return [volume], [mount], [env]


def pod_spec_common(cfg: OperatorConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
    }
    if cfg.service_account:
        spec["serviceAccountName"] = cfg.service_account
    return spec


def pod_scheduling(spec: Scheduling) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity for a Pod spec; only the ones the user set, so
    Pods of specs without them (and their spec hashes) stay as they were."""
    wire = spec.to_api()
    return {key: wire[key] for key in ("nodeSelector", "tolerations", "affinity") if key in wire}
