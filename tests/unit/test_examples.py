"""manifests/examples/: every Dockyard resource validates against its CRD (OpenAPI + CEL) and
parses with the operator's model; ConfigMaps are well-formed; the set hangs together."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.api import KINDS
from tests.unit.test_crds import CRDS, VALIDATORS

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))  # distributed/ too: validated, applied only on purpose


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in FILES:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((f"{path.relative_to(EXAMPLES)}#{i}", doc))
    return docs


DOCS = documents()
DOCKYARD_DOCS = [
    pytest.param(doc, id=name) for name, doc in DOCS if doc.get("apiVersion") == "dockyard.dev/v1alpha1"
]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc.get("kind") == kind]


def test_examples_cover_every_kind() -> None:
    assert {"Dataset", "TrainingRun", "ModelDeployment"} <= {doc["kind"] for _, doc in DOCS}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_document_is_a_known_object(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        assert (doc["apiVersion"], doc["kind"]) in {("dockyard.dev/v1alpha1", k) for k in KINDS} | {
            ("v1", "ConfigMap")
        }
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert "namespace" not in doc["metadata"], (
            "examples are applied to the namespace of the user's choice"
        )
        assert "status" not in doc


@pytest.mark.parametrize("validator", sorted(VALIDATORS))
@pytest.mark.parametrize("doc", DOCKYARD_DOCS)
def test_validates_against_crd(doc: dict[str, Any], validator: str) -> None:
    obj, errors = VALIDATORS[validator](CRDS[doc["kind"]], doc)
    assert errors == []
    assert obj["spec"]["source" if doc["kind"] == "Dataset" else "modelName"]  # not pruned away


@pytest.mark.parametrize("doc", DOCKYARD_DOCS)
def test_parses_with_model(doc: dict[str, Any]) -> None:
    spec_model, _ = KINDS[doc["kind"]]
    spec = spec_model.model_validate(doc["spec"])
    assert spec_model.model_validate(spec.to_api()) == spec


@pytest.mark.parametrize("doc", DOCKYARD_DOCS)
def test_defaulted_form_parses_with_model(doc: dict[str, Any]) -> None:
    """What the operator receives (pruned and defaulted by the API server) parses too."""
    obj, _ = VALIDATORS["local"](CRDS[doc["kind"]], doc)
    KINDS[doc["kind"]][0].model_validate(obj["spec"])


def test_names_line_up() -> None:
    [dataset] = by_kind("Dataset")
    [run] = [r for r in by_kind("TrainingRun") if "sweep" not in r["spec"] and "backend" not in r["spec"]]
    [deployment] = by_kind("ModelDeployment")
    assert all(r["spec"]["datasetRef"]["name"] == dataset["metadata"]["name"] for r in by_kind("TrainingRun"))
    assert deployment["spec"]["modelName"] == run["spec"]["modelName"]
    assert run["spec"]["retrain"]["onDrift"]["modelDeployment"] == deployment["metadata"]["name"]
    aliases = {v.get("alias") for v in deployment["spec"]["variants"]}
    assert run["spec"]["alias"] in aliases, "a variant follows the alias the TrainingRun sets"
    target = dataset["spec"]["schema"]["target"]
    assert target in [c["name"] for c in dataset["spec"]["schema"]["columns"]]


def test_dataset_configmap_is_in_the_examples() -> None:
    [dataset] = by_kind("Dataset")
    volume = dataset["spec"]["source"].get("volume") or {}
    if "configMap" not in volume:
        pytest.skip("the example Dataset does not read a ConfigMap")
    names = {cm["metadata"]["name"] for cm in by_kind("ConfigMap")}
    assert volume["configMap"]["name"] in names


@pytest.mark.parametrize("cm", [pytest.param(d, id=d["metadata"]["name"]) for d in by_kind("ConfigMap")])
def test_configmap_is_well_formed(cm: dict[str, Any]) -> None:
    assert set(cm) <= {"apiVersion", "kind", "metadata", "data", "binaryData"}
    data = cm.get("data") or {}
    assert data
    for key, value in data.items():
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", key) and len(key) <= 253, key
        assert isinstance(value, str), key
    assert len(yaml.safe_dump(cm).encode()) < 1024 * 1024, "ConfigMaps are limited to 1 MiB"


def test_configmap_data_satisfies_the_dataset() -> None:
    """The example data passes the example Dataset's own schema and rules (so the demo goes Ready)."""
    [dataset] = by_kind("Dataset")
    source = dataset["spec"]["source"]
    volume = source.get("volume") or {}
    if "configMap" not in volume:
        pytest.skip("the example Dataset does not read a ConfigMap")
    cms = {cm["metadata"]["name"]: cm for cm in by_kind("ConfigMap")}
    cm = cms.get(volume["configMap"]["name"])
    if cm is None:
        pytest.fail(f"ConfigMap {volume['configMap']['name']} is missing from manifests/examples/")
    mount = volume.get("mountPath", "/data").rstrip("/")
    key = source["uri"].removeprefix("file://").removeprefix(mount + "/")
    assert key in cm["data"], f"{source['uri']} is not a key of ConfigMap {cm['metadata']['name']}"
    assert source.get("format", "csv") == "csv"
    rows = list(csv.DictReader(io.StringIO(cm["data"][key])))
    spec = dataset["spec"]
    assert len(rows) >= spec.get("validation", {}).get("minRows", 0)
    parse = {
        "float": float,
        "integer": int,
        "string": str,
        "boolean": lambda s: {"true": True, "false": False}[s.lower()],
    }
    for column in spec["schema"]["columns"]:
        values = [row.get(column["name"]) for row in rows]
        assert all(v is not None for v in values), f"column {column['name']} missing"
        present = [v for v in values if v != ""]
        if not column.get("nullable", True):
            assert len(present) == len(values), column["name"]
        for v in present:
            parse[column["type"]](v)
        if "allowedValues" in column:
            assert set(present) <= {str(a) for a in column["allowedValues"]}, column["name"]
