"""The one place that decides labels, annotations, owner references and child names."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from . import __version__
from .api.common import API_VERSION

PART_OF = "dockyard"
MANAGED_BY = "dockyard-operator"

# dockyard.dev/* label keys
KIND_LABEL = "dockyard.dev/kind"
OWNER_LABEL = "dockyard.dev/owner"
MODEL_LABEL = "dockyard.dev/model"
MODEL_VERSION_LABEL = "dockyard.dev/model-version"
VARIANT_LABEL = "dockyard.dev/variant"
ATTEMPT_LABEL = "dockyard.dev/attempt"
TRIAL_LABEL = "dockyard.dev/trial"  # a sweep trial's index, on its Job
COMPONENT_LABEL = "app.kubernetes.io/component"
VERSION_LABEL = "app.kubernetes.io/version"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

# app.kubernetes.io/component of the Pods the operator creates.
PROFILER_COMPONENT = "profiler"
TRAINER_COMPONENT = "trainer"
SERVING_COMPONENT = "serving"
ROUTER_COMPONENT = "router"
NETWORK_POLICY_COMPONENT = "network-policy"
# The operator's Pods that talk to MLflow: training Jobs (log the run, the model) and serving
# Pods (their fetch-model init container downloads the model version). Profiling Jobs and the
# builtin router never do.
MLFLOW_CLIENT_COMPONENTS = (TRAINER_COMPONENT, SERVING_COMPONENT)

# Annotation carrying the hash of what the operator last applied to a child; a child whose
# hash matches is left alone, so steady state makes no API writes.
SPEC_HASH_ANNOTATION = "dockyard.dev/spec-hash"
CONFIG_HASH_ANNOTATION = "dockyard.dev/config-hash"
# On a profile Job: the resourceVersion of the ConfigMap it profiles (see the Dataset controller).
SOURCE_REVISION_ANNOTATION = "dockyard.dev/source-revision"

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")


def label_value(value: str) -> str:
    """Make an arbitrary string a valid label value (<= 63 chars, safe charset)."""
    cleaned = _LABEL_VALUE_BAD.sub("-", value)[:63].strip("-_.")
    return cleaned


def standard_labels(
    *,
    owner_kind: str,
    owner_name: str,
    component: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Labels every child carries: app.kubernetes.io/* plus dockyard.dev/*."""
    labels = {
        "app.kubernetes.io/name": label_value(owner_name),
        "app.kubernetes.io/instance": label_value(owner_name),
        COMPONENT_LABEL: component,
        PART_OF_LABEL: PART_OF,
        MANAGED_BY_LABEL: MANAGED_BY,
        VERSION_LABEL: label_value(__version__),
        KIND_LABEL: owner_kind.lower(),
        OWNER_LABEL: label_value(owner_name),
    }
    for key, value in (extra or {}).items():
        labels[key] = label_value(value)
    return labels


def pod_template_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """An object's labels for its Pod template: without the operator's version, so an operator
    upgrade does not roll every Pod it manages."""
    return {k: v for k, v in labels.items() if k != VERSION_LABEL}


def selector_labels(*, owner_kind: str, owner_name: str, component: str, **extra: str) -> dict[str, str]:
    """The stable subset used in selectors (never includes versions: selectors are immutable)."""
    labels = {
        KIND_LABEL: owner_kind.lower(),
        OWNER_LABEL: label_value(owner_name),
        COMPONENT_LABEL: component,
    }
    for key, value in extra.items():
        labels[key] = label_value(value)
    return labels


def mlflow_client_pod_selector() -> dict[str, Any]:
    """LabelSelector of every Pod the operator creates that calls MLflow, in any namespace
    (the chart's MLflow NetworkPolicy renders exactly this; tests/chart checks it)."""
    return {
        "matchLabels": {PART_OF_LABEL: PART_OF, MANAGED_BY_LABEL: MANAGED_BY},
        "matchExpressions": [
            {"key": COMPONENT_LABEL, "operator": "In", "values": list(MLFLOW_CLIENT_COMPONENTS)},
        ],
    }


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to a Dockyard object (children are garbage-collected with it)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether ``child`` has an ownerReference to this very ``owner`` (by uid, not name)."""
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in child.get("metadata", {}).get("ownerReferences") or [])


def child_name(*parts: str, max_length: int = 63) -> str:
    """Deterministic DNS-label name from parts; long names keep a hash suffix to stay unique."""
    name = "-".join(p for p in parts if p)
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: max_length - 9].rstrip('-')}-{digest}"


def content_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def stamp_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Record the hash of the desired object in its own annotations (excluding the hash itself)."""
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    annotations[SPEC_HASH_ANNOTATION] = content_hash(obj)
    return obj
