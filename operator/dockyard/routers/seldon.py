"""``router.type: seldon``: one SeldonDeployment instead of Dockyard's own serving objects.

For clusters that run Seldon Core 1.x (BSL 1.1 since 1.18: the opt-in path). One predictor
per variant named after it, ``traffic`` = weights normalised to whole percent summing to
exactly 100 (largest remainder; weight 0 -> traffic 0, the predictor still runs), graph
``MLFLOW_SERVER`` over the resolved version's artifacts.

Decision on the model URI: Seldon's storage initializer downloads ``modelUri`` itself and
knows nothing of the MLflow registry (``models:/name/3`` means nothing to it), so the builder
takes ``model_uris`` (variant name -> the artifact location of the resolved version, e.g.
``s3://mlflow/1/<run>/artifacts/model``, what ``MlflowClient.get_model_version_download_uri``
returns) as an input next to the resolved versions. The controller looks it up in the
registry when it resolves the version. Credentials for the artifact store go in a Secret the
cluster admin names in the SeldonDeployment's storage initializer settings (not managed
here).

Shadows: Seldon Core 1.x has one mirror knob, a predictor with ``shadow: true``, which receives
a copy of every request (no percentage) and whose responses Seldon discards; its webhook
refuses more than one shadow. So a shadow variant becomes a ``shadow: true`` predictor with
``traffic: 0`` (no live share), and the API refuses ``shadow`` below 100 or a second shadow
with ``router.type: seldon`` (mirroring everything when 10 % was asked would put ten times
the expected load on the shadow). The builder checks that again.

``spec.runtime`` picks the Seldon protocol: ``mlserver`` -> ``v2`` (Seldon serves MLflow
models with MLServer, the same V2 API as Dockyard's own runtime), ``seldon`` -> ``seldon``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from ..builders.pods import pod_scheduling
from ..config import OperatorConfig
from ..labels import (
    MODEL_LABEL,
    MODEL_VERSION_LABEL,
    VARIANT_LABEL,
    label_value,
)
from .common import (
    SERVING_COMPONENT,
    check_resolved,
    check_variants,
    integer_percentages,
    owned_custom_object,
    owner_name_ns,
    require_model_uri,
    router_service_name,
    shadow_variants,
)

API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"
GRAPH_NAME = "model"
# Seldon Core's default user id for its images (operator setting defaultUserID).
SELDON_UID = 8888


def build_seldon_deployment(
    owner: dict[str, Any],
    spec: ModelDeploymentSpec,
    resolved: Mapping[str, str],
    model_uris: Mapping[str, str],
    cfg: OperatorConfig,
) -> dict[str, Any]:
    """SeldonDeployment ``<md>`` with one MLFLOW_SERVER predictor per variant."""
    del cfg  # Seldon picks its own images; nothing operator-wide applies
    md_name, _ = owner_name_ns(owner)
    versions = check_resolved(spec, resolved)
    missing = [v.name for v in spec.variants if v.name not in model_uris]
    if missing:
        raise ValueError(f"no model URI for variant(s): {', '.join(missing)}")
    traffic = integer_percentages(spec)
    shadows = dict(shadow_variants(spec))
    if len(shadows) > 1 or any(p != 100 for p in shadows.values()):
        raise ValueError(f"refusing shadows {shadows}: Seldon mirrors every request to at most one shadow "
                         "predictor (shadow: 100)")
    predictors: list[dict[str, Any]] = []
    for v in check_variants(spec):
        container: dict[str, Any] = {
            "name": GRAPH_NAME,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
                # The prepackaged MLflow server builds the model's environment at start-up.
                "readOnlyRootFilesystem": False,
            },
        }
        if v.resources is not None:
            resources = v.resources.to_container_resources()
            if resources:
                container["resources"] = resources
        predictor: dict[str, Any] = {
            "name": v.name,
            "replicas": v.replicas,
            "traffic": traffic[v.name],
            "labels": {
                MODEL_LABEL: label_value(spec.model_name),
                MODEL_VERSION_LABEL: versions[v.name],
                VARIANT_LABEL: v.name,
            },
            "graph": {
                "name": GRAPH_NAME,
                "type": "MODEL",
                "implementation": "MLFLOW_SERVER",
                "modelUri": require_model_uri(model_uris[v.name]),
                "children": [],
            },
            "componentSpecs": [{
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SELDON_UID,
                        "runAsGroup": SELDON_UID,
                        "fsGroup": SELDON_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **pod_scheduling(v),
                    "containers": [container],
                },
            }],
        }
        if v.name in shadows:
            predictor["shadow"] = True
        predictors.append(predictor)
    body = {
        "name": router_service_name(md_name),
        "protocol": "v2" if spec.runtime == "mlserver" else "seldon",
        "predictors": predictors,
    }
    return owned_custom_object(owner, spec, api_version=API_VERSION, kind=KIND, component=SERVING_COMPONENT,
                               body=body)


def build_router_objects(
    owner: dict[str, Any],
    spec: ModelDeploymentSpec,
    resolved: Mapping[str, str],
    cfg: OperatorConfig,
    *,
    model_uris: Mapping[str, str],
) -> list[dict[str, Any]]:
    return [build_seldon_deployment(owner, spec, resolved, model_uris, cfg)]
