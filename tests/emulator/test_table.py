"""Table output for kubectl get: CRD printer columns (JSONPath incl. filters) and built-in defaults."""

from __future__ import annotations

from tests.kubeapi.table import human_duration, jsonpath

from .conftest import WIDGETS, widget

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


def test_crd_printer_columns(k):
    k.post(WIDGETS, widget("w1", color="blue", size=7))
    k.post(WIDGETS, widget("w2"))
    k.patch(
        f"{WIDGETS}/w1/status",
        {
            "status": {
                "conditions": [
                    {"type": "Progressing", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ]
            }
        },
    )
    t = k.get(WIDGETS, headers={"Accept": TABLE}).json()
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Color", "Size", "Ready", "Age"]
    assert t["columnDefinitions"][0]["format"] == "name"
    rows = {r["cells"][0]: r["cells"] for r in t["rows"]}
    assert rows["w1"][:4] == ["w1", "blue", 7, "True"]
    assert rows["w2"][:4] == ["w2", "red", 3, None]
    assert rows["w1"][4].endswith("s")  # age, e.g. "0s"
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert t["rows"][0]["object"]["metadata"]["name"] == "w1"
    assert t["metadata"]["resourceVersion"]
    one = k.get(f"{WIDGETS}/w1", headers={"Accept": TABLE}).json()
    assert len(one["rows"]) == 1 and one["rows"][0]["cells"][0] == "w1"
    full = k.get(WIDGETS, headers={"Accept": TABLE}, params={"includeObject": "Object"}).json()
    assert full["rows"][0]["object"]["spec"]["color"] == "blue"


def test_repo_crd_columns(k):
    t = k.get("/apis/dockyard.dev/v1alpha1/namespaces/default/trainingruns", headers={"Accept": TABLE}).json()
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names[0] == "Name" and "Ready" in names and names[-1] == "Age"


def test_builtin_default_columns(k):
    k.post(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}},
    )
    t = k.get("/api/v1/namespaces/default/configmaps", headers={"Accept": TABLE}).json()
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert t["rows"][0]["cells"][:2] == ["c", 1]
    t = k.get("/api/v1/namespaces/default/serviceaccounts", headers={"Accept": TABLE}).json()
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]


def test_plain_json_without_table_accept(k):
    k.post(WIDGETS, widget())
    assert k.get(WIDGETS).json()["kind"] == "WidgetList"


def test_jsonpath_subset():
    obj = {
        "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
        "spec": {"variants": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]},
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, ".spec.variants[*].weight") == [80, 20]
    assert jsonpath(obj, ".spec.variants[1].name") == ["b"]
    assert jsonpath(obj, "{.spec.variants[0].name}") == ["a"]
    assert jsonpath(obj, ".spec.missing") == []


def test_human_duration():
    assert [human_duration(s) for s in (5, 119, 300, 3600 * 5 + 60, 86400 * 3)] == [
        "5s",
        "119s",
        "5m",
        "5h1m",
        "3d",
    ]
