"""The generated CRDs: in sync with the models, structural, and enforcing what the issue asks.

Objects are validated against the generated openAPIV3Schema the way the API server does it:
prune unknown fields, apply defaults, validate the OpenAPI schema (jsonschema, Draft 4 =
OpenAPI 3.0 semantics, with Go regexp anchoring), then evaluate the CEL
`x-kubernetes-validations` rules with cel-python (transition rules see `oldSelf`).
When the API emulator's validator (tests/kubeapi/validation.py) is present, every schema
case runs through it as well.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from dockyard.api import KINDS
from tests.unit.specpath import DELETE, set_path

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLES = ROOT / "manifests" / "examples"
FILES = {
    "Dataset": "dockyard.dev_datasets.yaml",
    "TrainingRun": "dockyard.dev_trainingruns.yaml",
    "ModelDeployment": "dockyard.dev_modeldeployments.yaml",
}


def load_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


CRDS = load_crds()


def root_schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


# ---------------------------------------------------------------------------------------------
# A small stand-in for the API server's custom-resource validation.


def prune_and_default(node: dict[str, Any], value: Any) -> Any:
    """Drop fields the schema does not know and fill in defaults, recursively (like the API server)."""
    if isinstance(value, dict) and node.get("type") == "object":
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            if isinstance(node.get("additionalProperties"), dict):
                return {k: prune_and_default(node["additionalProperties"], v) for k, v in value.items()}
            return value
        props = node.get("properties")
        if props is not None:
            out = {k: v for k, v in value.items() if k in props}
            for name, child in props.items():
                if name not in out and "default" in child:
                    out[name] = copy.deepcopy(child["default"])
                if name in out:
                    out[name] = prune_and_default(child, out[name])
            return out
        if isinstance(node.get("additionalProperties"), dict):
            return {k: prune_and_default(node["additionalProperties"], v) for k, v in value.items()}
        return value
    if isinstance(value, list) and "items" in node:
        return [prune_and_default(node["items"], v) for v in value]
    return value


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 structural schema -> Draft 4 JSON Schema (Kubernetes extensions translated)."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "default"}
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_jsonschema(node["items"])
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _go_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    # Go's regexp (what the API server uses): `$` matches only at the very end, where Python's
    # `re` also accepts a trailing newline.
    if not isinstance(instance, str):
        return
    translated = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if not re.search(translated, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


OpenApiValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _go_pattern})

from tests.kubeapi.cel import K8S_FUNCTIONS  # noqa: E402

_CEL_ENV = celpy.Environment()
_CEL_CACHE: dict[str, Any] = {}


def cel_program(rule: str) -> Any:
    if rule not in _CEL_CACHE:
        # With the Kubernetes CEL library functions (isSorted, lowerAscii, ...) as the API server has them.
        _CEL_CACHE[rule] = _CEL_ENV.program(_CEL_ENV.compile(rule), functions=K8S_FUNCTIONS)
    return _CEL_CACHE[rule]


def eval_cel(rule: str, value: Any, old: Any = None) -> bool | str:
    """True/False, or an error string (the API server reports evaluation errors as failures)."""
    activation = {"self": celpy.json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        return bool(cel_program(rule).evaluate(activation))
    except celpy.CELEvalError as err:
        return f"evaluation error: {err}"


_MISSING = object()


def cel_errors(node: dict[str, Any], value: Any, old: Any = _MISSING, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule under `node`; transition rules (those using
    oldSelf) run only where an old value exists at the same place, as on the API server."""
    errors: list[str] = []
    for rule in node.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is _MISSING:
            continue
        result = eval_cel(rule["rule"], value, old if uses_old else None)
        if result is not True:
            detail = "" if result is False else f" ({result})"
            errors.append(f"{path or '<root>'}: {rule['message']}{detail}")
    if isinstance(value, dict):
        props = node.get("properties") or {}
        addl = (
            node.get("additionalProperties") if isinstance(node.get("additionalProperties"), dict) else None
        )
        for key, child_value in value.items():
            child = props.get(key, addl)
            if child is None:
                continue
            child_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            errors += cel_errors(child, child_value, child_old, f"{path}.{key}")
    elif isinstance(value, list) and "items" in node:
        keys = node.get("x-kubernetes-list-map-keys")
        for i, item in enumerate(value):
            item_old: Any = _MISSING
            if keys and isinstance(old, list) and isinstance(item, dict):
                matches = [o for o in old if all(o.get(k) == item.get(k) for k in keys)]
                item_old = matches[0] if matches else _MISSING
            errors += cel_errors(node["items"], item, item_old, f"{path}[{i}]")
    return errors


def local_validate(
    crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None
) -> tuple[dict, list[str]]:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = prune_and_default(schema, copy.deepcopy(obj))
    errors = [
        ".".join(str(p) for p in err.absolute_path) + f": {err.message}"
        for err in OpenApiValidator(to_jsonschema(schema)).iter_errors(obj)
    ]
    if not errors:  # the API server runs CEL only on objects that pass the OpenAPI schema
        old_obj = prune_and_default(schema, copy.deepcopy(old)) if old is not None else _MISSING
        errors = cel_errors(schema, obj, old_obj)
    return obj, errors


def _emulator_validate() -> Callable[..., tuple[dict, list[str]]] | None:
    try:
        from tests.kubeapi.validation import validate_custom_resource
    except ImportError:
        return None
    return validate_custom_resource


VALIDATORS: dict[str, Callable[..., tuple[dict, list[str]]]] = {"local": local_validate}
if (_emulator := _emulator_validate()) is not None:
    VALIDATORS["emulator"] = _emulator


@pytest.fixture(params=sorted(VALIDATORS))
def validate(request: pytest.FixtureRequest) -> Callable[..., tuple[dict, list[str]]]:
    return VALIDATORS[request.param]


def resource(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


# ---------------------------------------------------------------------------------------------
# In sync with the models.


def _dockyard_command() -> list[str]:
    script = Path(sys.executable).parent / "dockyard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dockyard"]


def test_crds_dir_is_reproduced_byte_for_byte(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_dockyard_command(), "crds", "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    committed = {p.name: p.read_bytes() for p in CRD_DIR.iterdir()}
    assert sorted(generated) == sorted(committed) == sorted(FILES.values())
    for name, content in generated.items():
        assert content == committed[name], f"crds/{name} is stale: run `dockyard crds --output-dir crds`"


def test_one_file_per_kind() -> None:
    for kind, filename in FILES.items():
        crd = yaml.safe_load((CRD_DIR / filename).read_text())
        assert crd["spec"]["names"]["kind"] == kind
    assert set(CRDS) == set(KINDS) == set(FILES)


# ---------------------------------------------------------------------------------------------
# Names, versions, subresources, printer columns.


# Names, group, scope and versions are in the generated crds/ files, which
# test_crds_dir_is_reproduced_byte_for_byte keeps equal to the generator's output (reviewed as a diff).


def test_short_names_do_not_collide_with_builtin_kinds() -> None:
    builtin = {
        "ds",
        "deploy",
        "svc",
        "po",
        "cm",
        "sa",
        "rs",
        "sts",
        "pv",
        "pvc",
        "ns",
        "no",
        "ep",
        "ing",
        "hpa",
        "pdb",
    }
    shorts = [s for crd in CRDS.values() for s in crd["spec"]["names"]["shortNames"]]
    assert not builtin & set(shorts)
    assert len(shorts) == len(set(shorts))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Dataset", ["Phase", "Version", "Rows", "Ready", "Age"]),
        ("TrainingRun", ["Phase", "Model", "Version", "Dataset", "Trials", "Ready", "Age"]),
        ("ModelDeployment", ["Phase", "Model", "Weights", "Rollout", "Step", "Drift", "Router", "Ready", "Age"]),
    ],
)
def test_printer_columns(kind: str, expected: list[str]) -> None:
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == expected
    age = columns[-1]
    assert age == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    schema = root_schema(kind)
    for column in columns:
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}
        path = column["jsonPath"].split("[")[0].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:  # every column points at a field the schema declares
            node = node["properties"][part]


# ---------------------------------------------------------------------------------------------
# Structural schema.

_FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "not", "nullable", "title", "$defs", "definitions"}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_schema_is_structural(kind: str) -> None:
    schema = root_schema(kind)
    assert schema["type"] == "object"
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    metadata = schema["properties"]["metadata"]
    # A CRD may say something about metadata.name / generateName only (kube-apiserver rule).
    assert metadata["type"] == "object" and set(metadata.get("properties", {})) <= {"name", "generateName"}
    for path, node in walk(schema):
        assert not _FORBIDDEN & set(node), f"{path}: {sorted(_FORBIDDEN & set(node))}"
        typeless_ok = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or typeless_ok, f"{path} has no type"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        if "type" in node:
            assert node["type"] in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "items" in node, path
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], path
        for key in node.get("required", []):
            assert key in node.get("properties", {}), f"{path}: required {key} is not a property"
        if "exclusiveMinimum" in node or "exclusiveMaximum" in node:  # OpenAPI 3.0 booleans
            assert isinstance(node.get("exclusiveMinimum", True), bool), path
            assert isinstance(node.get("exclusiveMaximum", True), bool), path


@pytest.mark.parametrize("kind", sorted(FILES))
def test_defaults_validate_against_their_own_node(kind: str) -> None:
    seen = 0
    for path, node in walk(root_schema(kind)):
        if "default" in node:
            seen += 1
            defaulted = prune_and_default(node, copy.deepcopy(node["default"]))
            errors = list(OpenApiValidator(to_jsonschema(node)).iter_errors(defaulted))
            assert not errors, f"{path}: default {node['default']!r}: {errors[0].message}"
            assert defaulted == node["default"] or node.get("type") == "object", path
    assert seen


def test_router_default_expands_to_builtin() -> None:
    spec = {"modelName": "m", "variants": [{"name": "a", "version": "1", "weight": 1}]}
    obj = prune_and_default(root_schema("ModelDeployment"), resource("ModelDeployment", spec))
    assert obj["spec"]["router"] == {
        "type": "builtin", "forceHeader": "X-Dockyard-Variant", "allowVariantForcing": False, "replicas": 1
    }
    assert obj["spec"]["runtime"] == "mlserver"
    assert obj["spec"]["variants"][0]["replicas"] == 1


@pytest.mark.parametrize("kind", sorted(FILES))
def test_schema_defaults_match_model_defaults(kind: str) -> None:
    """A minimal spec defaulted by the API server parses to the same model as without defaults."""
    minimal = {
        "Dataset": {"source": {"uri": "s3://b/k.csv"}},
        "TrainingRun": {
            "datasetRef": {"name": "d"},
            "modelName": "m",
            "trainer": {"estimator": {"class": "a.B"}},
        },
        "ModelDeployment": {"modelName": "m", "variants": [{"name": "a", "version": "1", "weight": 1}]},
    }[kind]
    spec_model = KINDS[kind][0]
    defaulted = prune_and_default(root_schema(kind), resource(kind, minimal))["spec"]
    assert spec_model.model_validate(defaulted) == spec_model.model_validate(minimal)


# ---------------------------------------------------------------------------------------------
# CEL rules.


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_cel_rule_compiles_and_has_a_message(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath", "reason", "messageExpression"}, path
            assert rule["message"], path
            _CEL_ENV.compile(rule["rule"])
    if "emulator" in VALIDATORS:
        from tests.kubeapi.validation import check_crd

        assert check_crd(CRDS[kind]) == []


@pytest.mark.parametrize("kind", sorted(FILES))
def test_no_cel_rule_iterates_an_unbounded_collection(kind: str) -> None:
    """The API server rejects a CRD whose estimated CEL cost is too high; a comprehension over a
    list or map without maxItems is the usual way to get there."""
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            for field in re.findall(r"self((?:\.\w+)?)\.(?:all|exists|exists_one|map|filter)\(", rule["rule"]):
                iterated = node["properties"][field[1:]] if field else node
                assert iterated.get("maxItems", 10**9) <= 100, f"{path}: {rule['rule']}"


# ---------------------------------------------------------------------------------------------
# Valid and invalid resources through the generated schema (+ CEL).

DS = {
    "source": {
        "uri": "file:///data/iris.csv",
        "format": "csv",
        "volume": {"configMap": {"name": "iris-data"}},
    },
    "schema": {"target": "y", "columns": [{"name": "x", "type": "float"}, {"name": "y", "type": "string"}]},
    "validation": {"minRows": 1, "maxMissingFraction": 0.1},
    "refreshInterval": "1h30m",
}
TR = {
    "datasetRef": {"name": "iris"},
    "modelName": "iris-classifier",
    "trainer": {
        "estimator": {
            "class": "sklearn.linear_model.LogisticRegression",
            "hyperparameters": {
                "C": 0.5,
                "fit_intercept": True,
                "max_iter": 200,
                "solver": "lbfgs",
                "tol": None,
            },
        }
    },
    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "gpus": 1},
    "qualityGate": {"metric": "accuracy", "threshold": 0.8},
    "alias": "challenger",
}
MD = {
    "modelName": "iris-classifier",
    "variants": [
        {"name": "a", "alias": "champion", "weight": 80},
        {"name": "b", "version": "3", "weight": 20},
    ],
    "router": {"type": "builtin", "sticky": {"header": "X-User-Id"}},
}
BASE = {"Dataset": DS, "TrainingRun": TR, "ModelDeployment": MD}


def mutate(kind: str, path: str, value: Any) -> dict[str, Any]:
    """BASE[kind] with `path` (dotted, list indices as numbers) set to value, or deleted if value is DELETE."""
    return set_path(BASE[kind], path, value)



# (kind, path, value): each must stay valid.
VALID = [
    pytest.param(
        "Dataset",
        "source",
        {"uri": "https://example.com/d.parquet", "format": "parquet"},
        id="ds-https-parquet",
    ),
    pytest.param(
        "Dataset",
        "source",
        {"uri": "s3://bucket/k.jsonl", "format": "jsonl", "credentialsSecretRef": {"name": "s3-creds"}},
        id="ds-s3-creds",
    ),
    pytest.param(
        "Dataset",
        "source.volume",
        {"persistentVolumeClaim": {"name": "pvc"}, "mountPath": "/data"},
        id="ds-pvc",
    ),
    pytest.param("Dataset", "schema", DELETE, id="ds-no-schema"),
    pytest.param(
        "Dataset", "schema.columns.1.allowedValues", ["a", 1, 2.5, True], id="ds-mixed-allowed-values"
    ),
    pytest.param(
        "TrainingRun",
        "trainer",
        {
            "custom": {
                "image": "ghcr.io/me/train:1",
                "command": ["python", "t.py"],
                "env": [{"name": "EPOCHS", "value": "3"}],
            }
        },
        id="tr-custom",
    ),
    pytest.param("TrainingRun", "datasetRef.version", "sha256:" + "a" * 64, id="tr-pinned-version"),
    pytest.param(
        "TrainingRun",
        "trainer.estimator.hyperparameters",
        {"learning_rate": 0.1, "early_stopping": False},
        id="tr-float-bool-hyperparameters",
    ),
    pytest.param("TrainingRun", "alias", DELETE, id="tr-no-alias"),
    pytest.param(
        "TrainingRun",
        "tolerations",
        [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"operator": "Exists"},
            {"key": "zone", "value": "a", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
        id="tr-tolerations",
    ),
    pytest.param(
        "ModelDeployment", "variants", [{"name": "only", "version": "1", "weight": 1}], id="md-single-variant"
    ),
    pytest.param("ModelDeployment", "variants.1.weight", 0, id="md-one-zero-weight"),
    pytest.param(
        "ModelDeployment",
        "variants",
        [{"name": f"v{i}", "version": str(i + 1), "weight": 1} for i in range(10)],
        id="md-ten-variants",
    ),
    pytest.param(
        "ModelDeployment",
        "router",
        {
            "type": "gateway",
            "gateway": {
                "parentRefs": [{"name": "gw", "namespace": "infra"}],
                "hostnames": ["iris.example.com", "*.example.org"],
            },
        },
        id="md-gateway",
    ),
    pytest.param("ModelDeployment", "runtime", "seldon", id="md-seldon-runtime"),
]

@pytest.mark.parametrize(("kind", "path", "value"), VALID)
def test_schema_accepts(validate: Callable[..., Any], kind: str, path: str, value: Any) -> None:
    spec = mutate(kind, path, value)
    _, errors = validate(CRDS[kind], resource(kind, spec))
    assert errors == []
    KINDS[kind][0].model_validate(spec)  # and the operator agrees


@pytest.mark.parametrize("kind", sorted(FILES))
def test_schema_accepts_base(validate: Callable[..., Any], kind: str) -> None:
    obj, errors = validate(CRDS[kind], resource(kind, BASE[kind]))
    assert errors == []
    KINDS[kind][0].model_validate(obj["spec"])


def test_unknown_fields_are_pruned(validate: Callable[..., Any]) -> None:
    spec = {**MD, "bogus": 1, "router": {**MD["router"], "extra": True}}
    obj, errors = validate(CRDS["ModelDeployment"], resource("ModelDeployment", spec))
    assert errors == []
    assert "bogus" not in obj["spec"]
    assert "extra" not in obj["spec"]["router"]


def test_status_validates(validate: Callable[..., Any]) -> None:
    obj = resource("ModelDeployment", MD)
    obj["status"] = {
        "phase": "Ready",
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllVariantsReady",
                "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 2,
            }
        ],
        "variants": [{"name": "a", "resolvedVersion": "3", "weight": 80, "readyReplicas": 1}],
        "weights": "a=80,b=20",
    }
    _, errors = validate(CRDS["ModelDeployment"], obj)
    assert errors == []
    obj["status"]["conditions"][0]["status"] = "Yes"
    _, errors = validate(CRDS["ModelDeployment"], obj)
    assert any("status" in e for e in errors)


# ---------------------------------------------------------------------------------------------
# Transition rules: TrainingRun spec immutability.

TRANSITIONS = [
    pytest.param("modelName", "other-model", False, id="modelName"),
    pytest.param("datasetRef.name", "other", False, id="datasetRef"),
    pytest.param("trainer.estimator.hyperparameters.C", 1.0, False, id="hyperparameters"),
    pytest.param("resources.requests.cpu", "1", False, id="resources-changed"),
    pytest.param("resources", DELETE, False, id="resources-removed"),
    pytest.param("backoffLimit", 3, True, id="backoffLimit"),
    pytest.param("activeDeadlineSeconds", 60, True, id="activeDeadlineSeconds"),
    pytest.param("experiment", "team/iris", True, id="experiment"),
    pytest.param("qualityGate.threshold", 0.9, True, id="qualityGate"),
    pytest.param("alias", "candidate", True, id="alias"),
    pytest.param("retrain", {"onDatasetChange": True}, True, id="retrain"),
]


@pytest.mark.parametrize(("path", "value", "allowed"), TRANSITIONS)
def test_trainingrun_update(validate: Callable[..., Any], path: str, value: Any, allowed: bool) -> None:
    old = resource("TrainingRun", TR)
    new = resource("TrainingRun", mutate("TrainingRun", path, value))
    _, errors = validate(CRDS["TrainingRun"], new, old)
    if allowed:
        assert errors == []
    else:
        assert any("immutable" in e for e in errors), errors


def test_trainingrun_resources_cannot_be_added(validate: Callable[..., Any]) -> None:
    old = resource("TrainingRun", mutate("TrainingRun", "resources", DELETE))
    _, errors = validate(CRDS["TrainingRun"], resource("TrainingRun", TR), old)
    assert any("immutable" in e for e in errors), errors


def test_trainingrun_unchanged_update_passes(validate: Callable[..., Any]) -> None:
    _, errors = validate(CRDS["TrainingRun"], resource("TrainingRun", TR), resource("TrainingRun", TR))
    assert errors == []


# ---------------------------------------------------------------------------------------------
# Bad objects: the corpus in tests/data/invalid/ is the one place for them. Each file is checked
# against the real API server and the pydantic models (tests/integration/test_bad_input.py), and
# every CEL rule is fired by one of them (tests/unit/test_bad_input_corpus.py). What the corpus
# cannot check: the operator's own ModelDeployment name check (the spec model never sees metadata).


@pytest.mark.parametrize(
    ("name", "ok"),
    [("iris", True), ("a", True), ("iris-v2", True), ("bad.md", False), ("9lives", False), ("Iris", False),
     ("x" * 42, True), ("x" * 43, False), ("trailing-", False)],
)
def test_modeldeployment_name_rule_and_operator_agree(name: str, ok: bool) -> None:
    """The name becomes Service names: the CRD schema's metadata.name rule and the operator's check agree."""
    from dockyard.api.modeldeployment import check_name

    _, errors = local_validate(CRDS["ModelDeployment"], resource("ModelDeployment", BASE["ModelDeployment"], name))
    assert (not errors) == ok, errors
    assert (check_name(name) is None) == ok
