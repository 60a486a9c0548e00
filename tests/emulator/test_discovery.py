"""Discovery endpoints, OpenAPI, and CRDs installed/removed at runtime."""

from __future__ import annotations

from .conftest import WIDGETS, gadget_crd, widget, widget_crd

AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


def test_version_and_core_discovery(k):
    v = k.get("/version").json()
    assert v["major"] == "1" and v["gitVersion"].startswith("v1.")
    api = k.get("/api").json()
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    core = k.get("/api/v1").json()
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    for name in (
        "namespaces",
        "pods",
        "services",
        "configmaps",
        "secrets",
        "events",
        "serviceaccounts",
        "pods/status",
    ):
        assert name in by_name, name
    assert by_name["namespaces"]["namespaced"] is False and by_name["pods"]["namespaced"] is True
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]


def test_group_discovery(k):
    groups = {g["name"]: g for g in k.get("/apis").json()["groups"]}
    for g in (
        "apps",
        "batch",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
        "dockyard.dev",
        "kopf.dev",
        "gateway.networking.k8s.io",
        "networking.istio.io",
        "machinelearning.seldon.io",
    ):
        assert g in groups, g
    assert groups["dockyard.dev"]["preferredVersion"]["groupVersion"] == "dockyard.dev/v1alpha1"
    assert {v["version"] for v in groups["networking.istio.io"]["versions"]} == {"v1", "v1beta1"}
    grp = k.get("/apis/dockyard.dev").json()
    assert grp["kind"] == "APIGroup" and grp["name"] == "dockyard.dev"
    res = {r["name"]: r for r in k.get("/apis/dockyard.dev/v1alpha1").json()["resources"]}
    assert res["trainingruns"]["shortNames"] == ["tr"] and res["trainingruns"]["categories"] == ["dockyard"]
    assert res["trainingruns"]["kind"] == "TrainingRun" and "trainingruns/status" in res
    assert set(res["datasets"]["verbs"]) >= {"get", "list", "watch", "create", "update", "patch", "delete"}
    peer = {r["name"]: r for r in k.get("/apis/kopf.dev/v1").json()["resources"]}
    assert peer["clusterkopfpeerings"]["namespaced"] is False and peer["kopfpeerings"]["namespaced"] is True
    assert k.get("/apis/nope.example.com").status_code == 404


def test_aggregated_discovery_request_degrades_to_plain_json(k):
    r = k.get("/apis", headers={"Accept": AGGREGATED})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["kind"] == "APIGroupList"
    r = k.get("/api", headers={"Accept": AGGREGATED})
    assert r.json()["kind"] == "APIVersions"


def test_openapi_v3_documents_fieldvalidation_and_crd_schemas(k):
    root = k.get("/openapi/v3").json()
    url = root["paths"]["apis/dockyard.dev/v1alpha1"]["serverRelativeURL"]
    doc = k.get(url).json()
    patch = doc["paths"]["/apis/dockyard.dev/v1alpha1/namespaces/{namespace}/trainingruns/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "TrainingRun"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "spec" in doc["components"]["schemas"]["dev.dockyard.v1alpha1.TrainingRun"]["properties"]


def test_crd_can_be_created_and_deleted_at_runtime(k, emu):
    assert (
        k.delete(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.dockyard.dev"
        ).status_code
        == 200
    )
    assert k.get(WIDGETS).status_code == 404
    assert "test.dockyard.dev/v1" not in [
        v["groupVersion"]
        for g in k.get("/apis").json()["groups"]
        for v in g["versions"]
        if g["name"] == "test.dockyard.dev"
    ] or "widgets" not in [r["name"] for r in k.get("/apis/test.dockyard.dev/v1").json()["resources"]]
    r = k.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widget_crd())
    assert r.status_code == 201, r.text
    crd = r.json()
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    assert k.post(WIDGETS, widget()).status_code == 201
    # deleting the CRD deletes its objects
    k.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.dockyard.dev")
    k.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widget_crd())
    assert k.get(WIDGETS).json()["items"] == []


def test_gateway_api_crd_missing_vs_present(k, emu):
    routes = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 80}]}],
        },
    }
    assert k.post(routes, route).status_code == 201
    emu.delete_crd("httproutes.gateway.networking.k8s.io")
    assert k.get(routes).status_code == 404
    assert "gateway.networking.k8s.io" not in [g["name"] for g in k.get("/apis").json()["groups"]]


def test_invalid_crd_is_rejected(k):
    bad = gadget_crd()
    bad["metadata"]["name"] = "wrong.name"
    r = k.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert r.status_code == 422
    bad = widget_crd()
    bad["metadata"]["name"] = "things.test.dockyard.dev"
    bad["spec"]["names"].update(plural="things", kind="Thing", shortNames=[])
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [
        {"rule": "self.(("}
    ]
    r = k.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert r.status_code == 422 and "x-kubernetes-validations" in r.json()["message"]


def test_multi_version_crd_serves_each_version(k):
    vs = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "v"},
        "spec": {"hosts": ["x"]},
    }
    assert (
        k.post("/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices", vs).status_code == 201
    )
    got = k.get("/apis/networking.istio.io/v1/namespaces/default/virtualservices/v").json()
    assert got["apiVersion"] == "networking.istio.io/v1" and got["spec"] == {"hosts": ["x"]}


def test_kopf_peering_objects(k):
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "default"},
        "status": {"someone": {"priority": 0, "lifetime": 60, "lastseen": "2025-01-01T00:00:00"}},
    }
    assert k.post("/apis/kopf.dev/v1/clusterkopfpeerings", peering).status_code == 201
    r = k.patch("/apis/kopf.dev/v1/clusterkopfpeerings/default", {"status": {"other": {"priority": 1}}})
    assert r.status_code == 200 and set(r.json()["status"]) == {"someone", "other"}
    ns_peering = {**peering, "kind": "KopfPeering"}
    assert k.post("/apis/kopf.dev/v1/namespaces/default/kopfpeerings", ns_peering).status_code == 201


def test_leases(k):
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "dockyard"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = k.post("/apis/coordination.k8s.io/v1/namespaces/default/leases", lease).json()
    created["spec"]["holderIdentity"] = "b"
    assert (
        k.put("/apis/coordination.k8s.io/v1/namespaces/default/leases/dockyard", created).status_code == 200
    )


def test_pod_log_subresource(k, emu):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
    }
    assert k.post("/api/v1/namespaces/default/pods", pod).status_code == 201
    emu.set_pod_log("default", "p", "main", "line1\nline2\n")
    r = k.get("/api/v1/namespaces/default/pods/p/log")
    assert r.status_code == 200 and r.text == "line1\nline2\n"
    assert k.get("/api/v1/namespaces/default/pods/p/log", params={"tailLines": 1}).text == "line2\n"
    assert k.get("/api/v1/namespaces/default/pods/nope/log").status_code == 404
