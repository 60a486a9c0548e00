"""Serving children of a ModelDeployment: one Deployment + Service per variant, plus the router.

Pure: validated spec and resolved versions in, Kubernetes object dicts out. The controller
calls :func:`desired_serving_children` and applies the list in order (ConfigMaps before the
Deployments that mount them, variant Services before the router that resolves their names).

What changes what:

* a variant's resolved version -> that variant's Deployment (labels + fetch-model args) and
  the router config (version response header); nothing else;
* weights -> router objects only (nginx config hash, HTTPRoute, VirtualService or
  SeldonDeployment); the variant Deployments and Services never contain a weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec, Variant
from ..config import OperatorConfig
from ..labels import (
    MODEL_LABEL,
    MODEL_VERSION_LABEL,
    VARIANT_LABEL,
    owner_reference,
    pod_template_labels,
    stamp_spec_hash,
    standard_labels,
)
from ..routers import ROUTER_KINDS, builtin, gateway, istio, seldon
from ..routers.common import (
    OWNER_KIND,
    SERVING_COMPONENT,
    check_resolved,
    http_port,
    owner_name_ns,
    ports_for,
    probe_paths,
    require_model_name,
    require_variant_name,
    require_version,
    router_service_name,
    scrape_path,
    serving_selector,
    variant_fqdn,
    variant_service_name,
)
from .pods import (
    container_security_context,
    drain_lifecycle,
    mlflow_ca,
    mlflow_env_from,
    pod_scheduling,
    pod_spec_common,
)

MODEL_DIR = "/mnt/models"
MODELS_VOLUME = "models"
TMP_VOLUME = "tmp"
GPU_RESOURCE = "nvidia.com/gpu"
# Model loading can take minutes (large artifacts, cold caches): the startup probe allows
# 5 minutes before liveness takes over.
STARTUP_FAILURE_THRESHOLD = 60


def _variant_labels(md_name: str, model_name: str, variant: str, version: str | None) -> dict[str, str]:
    extra = {MODEL_LABEL: model_name, VARIANT_LABEL: variant}
    if version is not None:
        extra[MODEL_VERSION_LABEL] = version
    return standard_labels(owner_kind=OWNER_KIND, owner_name=md_name, component=SERVING_COMPONENT, extra=extra)


def _named_ports(runtime: str) -> dict[str, int]:
    """The ports a runtime really serves. seldon's microservice also opens gRPC, but only the
    V2 runtime (mlserver) is exposed over gRPC: seldon's gRPC API is Seldon-specific."""
    ports = ports_for(runtime)
    names = ("http", "grpc", "metrics") if runtime == "mlserver" else ("http", "metrics")
    return {name: ports[name] for name in names}


def build_variant_deployment(
    owner: dict[str, Any],
    spec: ModelDeploymentSpec,
    variant: Variant,
    resolved_version: str,
    cfg: OperatorConfig,
) -> dict[str, Any]:
    """The Deployment ``<md>-<variant>`` serving ``resolved_version`` of ``spec.model_name``."""
    md_name, ns = owner_name_ns(owner)
    name = require_variant_name(variant.name)
    version = require_version(resolved_version)
    model = require_model_name(spec.model_name)
    runtime = spec.runtime
    ports = ports_for(runtime)
    exposed = _named_ports(runtime)
    health = probe_paths(runtime)
    labels = _variant_labels(md_name, model, name, version)
    image = spec.image or cfg.runtime_image

    resources = variant.resources.to_container_resources() if variant.resources else {}
    # The init container gets the same CPU/memory (the pod's request is the max of the two
    # anyway) but never a GPU.
    init_resources = {
        kind: {k: v for k, v in values.items() if k != GPU_RESOURCE}
        for kind, values in resources.items()
    }
    init_resources = {k: v for k, v in init_resources.items() if v}

    def mounts() -> list[dict[str, Any]]:
        # A fresh list per container: no object is shared between two places of the tree.
        return [{"name": MODELS_VOLUME, "mountPath": MODEL_DIR}, {"name": TMP_VOLUME, "mountPath": "/tmp"}]

    fetch: dict[str, Any] = {
        "name": "fetch-model",
        "image": image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [
            "dockyard", "fetch-model",
            "--model", model,
            "--version", version,
            "--dest", MODEL_DIR,
            "--variant", name,
            "--runtime", runtime,
        ],
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": cfg.mlflow_tracking_uri_for_pods},
            {"name": "HOME", "value": "/tmp"},
        ],
        "securityContext": container_security_context(),
        "volumeMounts": mounts(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = mlflow_env_from(cfg)
    if env_from:
        fetch["envFrom"] = env_from
    ca_volumes, ca_mounts, ca_env = mlflow_ca(cfg)
    fetch["env"] += ca_env
    fetch["volumeMounts"] += ca_mounts
    if init_resources:
        fetch["resources"] = init_resources

    env = [
        {"name": "DOCKYARD_MODEL_NAME", "value": model},
        {"name": "DOCKYARD_MODEL_VERSION", "value": version},
        {"name": "DOCKYARD_VARIANT", "value": name},
        {"name": "DOCKYARD_MODEL_DIR", "value": MODEL_DIR},
        {"name": "HOME", "value": "/tmp"},
    ]
    if runtime == "mlserver":
        # MLServer 1.7.1's parallel inference workers crash with uvloop 0.23 (NOTES.md).
        env.append({"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    server: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [
            "dockyard", "serve",
            "--runtime", runtime,
            "--model-dir", MODEL_DIR,
            "--http-port", str(ports["http"]),
            "--grpc-port", str(ports["grpc"]),
            "--metrics-port", str(ports["metrics"]),
            "--variant", name,
        ],
        "workingDir": "/tmp",
        "env": env,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in exposed.items()],
        "startupProbe": probe(health["liveness"], 5, STARTUP_FAILURE_THRESHOLD),
        "readinessProbe": probe(health["readiness"], 5, 3),
        "livenessProbe": probe(health["liveness"], 10, 3),
        "lifecycle": drain_lifecycle(),
        "securityContext": container_security_context(),
        "volumeMounts": mounts(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        server["resources"] = resources

    pod_spec: dict[str, Any] = {
        **pod_spec_common(cfg),
        **pod_scheduling(variant),
        # Service links would inject e.g. MLSERVER_PORT for a Service named "mlserver", which
        # MLServer reads as a setting.
        "enableServiceLinks": False,
        "initContainers": [fetch],
        "containers": [server],
        "volumes": [
            {"name": MODELS_VOLUME, "emptyDir": {}},
            {"name": TMP_VOLUME, "emptyDir": {}},
            *ca_volumes,
        ],
    }
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": variant_service_name(md_name, name),
            "namespace": ns,
            "labels": dict(labels),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": variant.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": serving_selector(md_name, name)},
            # Keep serving the old version until a new pod is ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": pod_template_labels(labels),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ports["metrics"]),
                        "prometheus.io/path": scrape_path(runtime),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    return stamp_spec_hash(deployment)


def build_variant_service(
    owner: dict[str, Any], spec: ModelDeploymentSpec, variant: Variant, cfg: OperatorConfig
) -> dict[str, Any]:
    """ClusterIP Service ``<md>-<variant>`` over that variant's pods (version-independent)."""
    del cfg
    md_name, ns = owner_name_ns(owner)
    name = require_variant_name(variant.name)
    app_protocol = {"http": "http", "grpc": "kubernetes.io/h2c", "metrics": "http"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": variant_service_name(md_name, name),
            "namespace": ns,
            "labels": _variant_labels(md_name, require_model_name(spec.model_name), name, None),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": serving_selector(md_name, name),
            "ports": [
                {"name": n, "port": p, "targetPort": n, "protocol": "TCP", "appProtocol": app_protocol[n]}
                for n, p in _named_ports(spec.runtime).items()
            ],
        },
    }
    return stamp_spec_hash(service)


def variant_endpoint(
    owner_ns: str, md_name: str, variant: str, cfg: OperatorConfig, runtime: str = "mlserver"
) -> str:
    """In-cluster URL of one variant: ``http://<md>-<variant>.<ns>.svc.<domain>:<http port>``."""
    return f"http://{variant_fqdn(owner_ns, md_name, variant, cfg)}:{http_port(runtime)}"


def router_endpoint(owner_ns: str, md_name: str, spec: ModelDeploymentSpec, cfg: OperatorConfig) -> str | None:
    """In-cluster URL clients use: the ``<md>`` Service for builtin/istio; None for gateway
    (the Gateway's address) and seldon (Seldon's ingress)."""
    if spec.router.type in ("builtin", "istio"):
        return f"http://{router_service_name(md_name)}.{owner_ns}.svc.{cfg.cluster_domain}"
    return None


def router_kind_for(spec: ModelDeploymentSpec) -> tuple[str, str] | None:
    """(apiVersion, kind) of the foreign CRD the chosen router needs; None for builtin."""
    return ROUTER_KINDS[spec.router.type]


def desired_serving_children(
    owner: dict[str, Any],
    spec: ModelDeploymentSpec,
    resolved: Mapping[str, str],
    cfg: OperatorConfig,
    *,
    model_uris: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every child object of this ModelDeployment, in apply order.

    ``resolved`` maps every variant name to its exact model version (``ValueError`` if one is
    missing or malformed: resolve first). ``model_uris`` (variant -> artifact location of the
    resolved version) is required for ``router.type: seldon`` only, which yields just the
    SeldonDeployment (Seldon runs the model servers). Every object carries the
    ownerReference and the spec-hash annotation.
    """
    versions = check_resolved(spec, resolved)
    router = spec.router.type
    if router == "seldon":
        if model_uris is None:
            raise ValueError("router type seldon needs the model URI of every resolved version")
        return seldon.build_router_objects(owner, spec, versions, cfg, model_uris=model_uris)
    children: list[dict[str, Any]] = []
    for v in spec.variants:
        children.append(build_variant_deployment(owner, spec, v, versions[v.name], cfg))
        children.append(build_variant_service(owner, spec, v, cfg))
    if router == "builtin":
        children += builtin.build_router_objects(owner, spec, versions, cfg)
    elif router == "gateway":
        children += gateway.build_router_objects(owner, spec, versions, cfg)
    elif router == "istio":
        children += istio.build_router_objects(owner, spec, versions, cfg)
    else:  # pragma: no cover - the API model's Literal makes this unreachable
        raise ValueError(f"unknown router type {router!r}")
    return children
