"""Generate the CustomResourceDefinitions from the pydantic models.

The models are the single source of truth; `dockyard crds` writes the output of
:func:`all_crds` to `crds/` and a test fails when the committed files drift.

Pydantic emits JSON Schema (with `$ref`, `anyOf` for Optional, titles); Kubernetes wants
a *structural* OpenAPI v3 schema: every node typed, no `$ref`, no `anyOf` carrying types,
no `null` type, defaults that validate. :func:`to_structural` does that conversion.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from . import dataset, modeldeployment, trainingrun
from .common import CATEGORY, GROUP, VERSION

# Keywords structural schemas allow and we keep verbatim.
_KEEP = {
    "description",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "default",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        merged = dict(defs[name])
        for key, value in node.items():
            if key == "x-kubernetes-validations":  # the model's rules and the field's rules
                merged[key] = merged.get(key, []) + value
            elif key != "$ref":
                merged[key] = value
        return merged
    return node


def _convert_exclusive(out: dict[str, Any]) -> None:
    # JSON Schema 2020 uses numeric exclusive bounds; OpenAPI v3.0 uses booleans.
    for bound, excl in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if excl in out and not isinstance(out[excl], bool):
            out[bound] = out.pop(excl)
            out[excl] = True


def to_structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    extras = {k: v for k, v in node.items() if k in _KEEP and not (k == "default" and v is None)}

    # Optional[X] -> X (absence means unset; Kubernetes objects omit empty fields).
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            inner = to_structural(options[0], defs)
            inner.update({k: v for k, v in extras.items() if k != "x-kubernetes-validations"})
            if "x-kubernetes-validations" in extras:
                inner["x-kubernetes-validations"] = (
                    inner.get("x-kubernetes-validations", []) + extras["x-kubernetes-validations"]
                )
            default = node.get("default")
            if default is not None:
                inner["default"] = default
            return inner
        # A union of scalars. int-or-string fits exactly {integer, string}: the API server
        # rejects any other type under it (a float or bool hyperparameter, say). A wider union
        # has no structural type: keep the value untyped and let pydantic check it.
        out = {k: v for k, v in extras.items()}
        kinds = {o.get("type") for o in options}
        if node.get("x-kubernetes-int-or-string") or kinds == {"integer", "string"}:
            out["x-kubernetes-int-or-string"] = True
            return out
        if kinds <= {"string", "integer", "number", "boolean"}:
            out["x-kubernetes-preserve-unknown-fields"] = True
            return out
        raise ValueError(f"cannot make a structural schema from anyOf {options!r}")

    out = dict(extras)
    if out.get("x-kubernetes-int-or-string"):
        return out
    kind = node.get("type")
    if kind == "object" or "properties" in node or "additionalProperties" in node:
        out["type"] = "object"
        if out.get("x-kubernetes-preserve-unknown-fields"):
            return out
        props = node.get("properties")
        if props:
            out["properties"] = {k: to_structural(v, defs) for k, v in props.items()}
            required = node.get("required")
            if required:
                out["required"] = list(required)
        addl = node.get("additionalProperties")
        if isinstance(addl, dict) and not props:
            out["additionalProperties"] = to_structural(addl, defs)
    elif kind == "array":
        out["type"] = "array"
        items = node.get("items", {})
        item_schema = to_structural(items, defs)
        out["items"] = item_schema
        if "x-kubernetes-int-or-string" in (node.get("items") or {}):
            out["items"] = {"x-kubernetes-int-or-string": True}
    elif kind in ("string", "integer", "number", "boolean"):
        out["type"] = kind
    else:
        raise ValueError(f"unsupported schema node {node!r}")
    _convert_exclusive(out)
    if "default" in node and node["default"] is not None:
        out["default"] = node["default"]
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}))


def build_crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    printer_columns: list[dict[str, Any]],
    description: str,
    name_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = model_schema(spec_model)
    status = model_schema(status_model)
    root: dict[str, Any] = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": (
                {"type": "object", "properties": {"name": name_schema}} if name_schema else {"type": "object"}
            ),
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "dockyard"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every Dockyard kind."""
    return {
        "dockyard.dev_datasets.yaml": build_crd(
            kind=dataset.KIND,
            plural=dataset.PLURAL,
            short_names=dataset.SHORT_NAMES,
            spec_model=dataset.DatasetSpec,
            status_model=dataset.DatasetStatus,
            printer_columns=dataset.PRINTER_COLUMNS,
            description="A versioned, validated tabular data set.",
        ),
        "dockyard.dev_trainingruns.yaml": build_crd(
            kind=trainingrun.KIND,
            plural=trainingrun.PLURAL,
            short_names=trainingrun.SHORT_NAMES,
            spec_model=trainingrun.TrainingRunSpec,
            status_model=trainingrun.TrainingRunStatus,
            printer_columns=trainingrun.PRINTER_COLUMNS,
            description="Train a model on a Dataset and register it in MLflow exactly once.",
        ),
        "dockyard.dev_modeldeployments.yaml": build_crd(
            kind=modeldeployment.KIND,
            plural=modeldeployment.PLURAL,
            short_names=modeldeployment.SHORT_NAMES,
            spec_model=modeldeployment.ModelDeploymentSpec,
            status_model=modeldeployment.ModelDeploymentStatus,
            printer_columns=modeldeployment.PRINTER_COLUMNS,
            description="Serve registered model versions with a weighted A/B traffic split.",
            name_schema=modeldeployment.NAME_SCHEMA,
        ),
    }


HEADER = "# Generated by `dockyard crds` from operator/dockyard/api. Do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
