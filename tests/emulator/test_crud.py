"""Core REST semantics: resourceVersion, uid, 409s, generation, status subresource, finalizers,
scopes, selectors, errors."""

from __future__ import annotations

import re

from .conftest import CLUSTER_WIDGETS, TR_PATH, WIDGETS, example, wait_for, widget

CM = "/api/v1/namespaces/default/configmaps"


def cm(name="c1", **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {"a": "1"}}


def test_create_sets_uid_timestamp_generation_and_resource_version(k):
    r = k.post(TR_PATH, example("TrainingRun"))
    assert r.status_code == 201
    meta = r.json()["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1 and meta["namespace"] == "default"
    got = k.get(f"{TR_PATH}/iris-rf").json()
    assert got["metadata"]["resourceVersion"] == meta["resourceVersion"]
    assert got["apiVersion"] == "dockyard.dev/v1alpha1" and got["kind"] == "TrainingRun"


def test_every_write_gets_a_new_resource_version_and_noop_writes_do_not(k):
    rvs = [k.post(CM, cm()).json()["metadata"]["resourceVersion"]]
    rvs.append(k.patch(f"{CM}/c1", {"data": {"b": "2"}}).json()["metadata"]["resourceVersion"])
    obj = k.get(f"{CM}/c1").json()
    obj["data"]["c"] = "3"
    rvs.append(k.put(f"{CM}/c1", obj).json()["metadata"]["resourceVersion"])
    assert len(set(rvs)) == 3 and [int(x) for x in rvs] == sorted(int(x) for x in rvs)
    same = k.patch(f"{CM}/c1", {"data": {"c": "3"}}).json()["metadata"]["resourceVersion"]
    assert same == rvs[-1]


def test_create_existing_is_409_already_exists(k):
    assert k.post(CM, cm()).status_code == 201
    r = k.post(CM, cm())
    assert r.status_code == 409
    st = r.json()
    assert st["reason"] == "AlreadyExists" and st["message"] == 'configmaps "c1" already exists'
    r = k.post(WIDGETS, widget())
    r = k.post(WIDGETS, widget())
    assert r.status_code == 409 and r.json()["message"] == 'widgets.test.dockyard.dev "w1" already exists'
    assert r.json()["details"] == {"name": "w1", "group": "test.dockyard.dev", "kind": "widgets"}


def test_stale_resource_version_is_409_conflict_for_update_and_patch(k):
    created = k.post(WIDGETS, widget()).json()
    k.patch(f"{WIDGETS}/w1", {"spec": {"size": 4}})
    stale = created
    stale["spec"]["size"] = 5
    r = k.put(f"{WIDGETS}/w1", stale)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    assert "the object has been modified" in r.json()["message"]
    r = k.patch(
        f"{WIDGETS}/w1",
        {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 6}},
    )
    assert r.status_code == 409
    r = k.patch(
        f"{WIDGETS}/w1",
        [
            {
                "op": "replace",
                "path": "/metadata/resourceVersion",
                "value": created["metadata"]["resourceVersion"],
            }
        ],
        "application/json-patch+json",
    )
    assert r.status_code == 409
    assert k.get(f"{WIDGETS}/w1").json()["spec"]["size"] == 4


def test_custom_resource_update_requires_resource_version(k):
    obj = k.post(WIDGETS, widget()).json()
    del obj["metadata"]["resourceVersion"]
    r = k.put(f"{WIDGETS}/w1", obj)
    assert r.status_code == 422 and "metadata.resourceVersion" in r.json()["message"]


def test_generation_bumps_only_on_spec_change_with_status_subresource(k):
    k.post(WIDGETS, widget())
    gen = lambda: k.get(f"{WIDGETS}/w1").json()["metadata"]["generation"]  # noqa: E731
    k.patch(f"{WIDGETS}/w1", {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}}})
    assert gen() == 1
    k.patch(f"{WIDGETS}/w1/status", {"status": {"phase": "Running"}})
    assert gen() == 1
    k.patch(f"{WIDGETS}/w1", {"spec": {"size": 4}})
    assert gen() == 2
    k.patch(f"{WIDGETS}/w1", {"spec": {"size": 4}})
    assert gen() == 2


def test_generation_without_status_subresource_bumps_on_any_non_metadata_change(k):
    body = {
        "apiVersion": "test.dockyard.dev/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"a": 1},
    }
    assert k.post(CLUSTER_WIDGETS, body).json()["metadata"]["generation"] == 1
    assert (
        k.patch(f"{CLUSTER_WIDGETS}/g", {"metadata": {"labels": {"x": "y"}}}).json()["metadata"]["generation"]
        == 1
    )
    assert k.patch(f"{CLUSTER_WIDGETS}/g", {"status": {"s": 1}}).json()["metadata"]["generation"] == 2
    assert k.patch(f"{CLUSTER_WIDGETS}/g", {"spec": {"a": 2}}).json()["metadata"]["generation"] == 3
    assert k.get(f"{CLUSTER_WIDGETS}/g/status").status_code == 404  # no status subresource


def test_status_subresource_separation(k):
    k.post(WIDGETS, widget())
    # the main endpoint ignores status
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"size": 5}, "status": {"phase": "Hacked"}})
    assert r.status_code == 200 and "status" not in r.json() and r.json()["spec"]["size"] == 5
    # /status changes only status
    r = k.patch(
        f"{WIDGETS}/w1/status",
        {"spec": {"size": 9}, "metadata": {"labels": {"l": "v"}}, "status": {"phase": "Running"}},
    )
    assert r.status_code == 200
    got = k.get(f"{WIDGETS}/w1").json()
    assert (
        got["status"] == {"phase": "Running"} and got["spec"]["size"] == 5 and "labels" not in got["metadata"]
    )
    # PUT on the main endpoint keeps the stored status; PUT on /status keeps the stored spec
    got["status"] = {"phase": "Other"}
    got["spec"]["size"] = 6
    r = k.put(f"{WIDGETS}/w1", got).json()
    assert r["status"] == {"phase": "Running"} and r["spec"]["size"] == 6
    r["status"] = {"phase": "Done"}
    r["spec"]["size"] = 1
    r2 = k.put(f"{WIDGETS}/w1/status", r).json()
    assert r2["status"] == {"phase": "Done"} and r2["spec"]["size"] == 6
    # GET /status returns the whole object
    assert k.get(f"{WIDGETS}/w1/status").json()["spec"]["size"] == 6
    # status is validated too
    r = k.patch(f"{WIDGETS}/w1/status", {"status": {"conditions": [{"type": "Ready", "status": "Yes"}]}})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "status.conditions[0].status"


def test_status_is_dropped_on_create_for_kinds_with_status_subresource(k):
    body = widget()
    body["status"] = {"phase": "Pretend"}
    assert "status" not in k.post(WIDGETS, body).json()


def test_finalizers_and_deletion_timestamp(k):
    body = widget()
    body["metadata"]["finalizers"] = ["dockyard.dev/a", "dockyard.dev/b"]
    k.post(WIDGETS, body)
    r = k.delete(f"{WIDGETS}/w1")
    assert r.status_code == 200
    obj = k.get(f"{WIDGETS}/w1").json()
    ts = obj["metadata"]["deletionTimestamp"]
    assert ts and obj["metadata"]["finalizers"] == ["dockyard.dev/a", "dockyard.dev/b"]
    # deleting again keeps the first timestamp
    k.delete(f"{WIDGETS}/w1")
    assert k.get(f"{WIDGETS}/w1").json()["metadata"]["deletionTimestamp"] == ts
    # no new finalizers while deleting
    r = k.patch(
        f"{WIDGETS}/w1", {"metadata": {"finalizers": ["dockyard.dev/a", "dockyard.dev/b", "x.dev/c"]}}
    )
    assert r.status_code == 422 and "no new finalizers" in r.json()["message"]
    # other updates are still possible
    assert k.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}}).status_code == 200
    k.patch(f"{WIDGETS}/w1", {"metadata": {"finalizers": ["dockyard.dev/b"]}})
    assert k.get(f"{WIDGETS}/w1").status_code == 200
    k.patch(
        f"{WIDGETS}/w1", [{"op": "remove", "path": "/metadata/finalizers"}], "application/json-patch+json"
    )
    assert k.get(f"{WIDGETS}/w1").status_code == 404


def test_delete_options_and_preconditions(k):
    uid = k.post(CM, cm()).json()["metadata"]["uid"]
    r = k.delete(f"{CM}/c1", {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "nope"}})
    assert r.status_code == 409
    r = k.delete(f"{CM}/c1", {"propagationPolicy": "Sideways"})
    assert r.status_code == 422
    r = k.delete(f"{CM}/c1", params={"dryRun": "All"})
    assert r.status_code == 200 and k.get(f"{CM}/c1").status_code == 200
    r = k.delete(f"{CM}/c1", {"propagationPolicy": "Background", "preconditions": {"uid": uid}})
    assert r.status_code == 200 and r.json()["status"] == "Success" and r.json()["details"]["uid"] == uid
    assert k.get(f"{CM}/c1").status_code == 404
    assert k.delete(f"{CM}/c1").status_code == 404
    # custom resources return the deleted object
    k.post(WIDGETS, widget())
    r = k.delete(f"{WIDGETS}/w1", {"propagationPolicy": "Foreground"})
    assert r.status_code == 200 and r.json()["kind"] == "Widget"


def test_namespaced_and_cluster_scoped_paths_and_all_namespace_lists(k):
    assert (
        k.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
        ).status_code
        == 201
    )
    k.post(WIDGETS, widget("w1"))
    k.post("/apis/test.dockyard.dev/v1/namespaces/team-a/widgets", widget("w2"))
    all_ns = k.get("/apis/test.dockyard.dev/v1/widgets").json()
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in all_ns["items"]] == [
        ("default", "w1"),
        ("team-a", "w2"),
    ]
    assert all_ns["kind"] == "WidgetList"
    assert [i["metadata"]["name"] for i in k.get(WIDGETS).json()["items"]] == ["w1"]
    # namespace in body must match the URL
    body = widget("w3")
    body["metadata"]["namespace"] = "team-a"
    assert k.post(WIDGETS, body).status_code == 400
    # creating in a missing namespace is 404
    r = k.post("/apis/test.dockyard.dev/v1/namespaces/nope/widgets", widget("w4"))
    assert r.status_code == 404 and r.json()["message"] == 'namespaces "nope" not found'
    # cluster-scoped kinds have no namespaced path, and vice versa
    assert k.get("/apis/test.dockyard.dev/v1/namespaces/default/gadgets").status_code == 404
    assert k.get("/apis/test.dockyard.dev/v1/widgets/w1").status_code == 404
    g = {"apiVersion": "test.dockyard.dev/v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": "x"}}
    assert "namespace" not in k.post(CLUSTER_WIDGETS, g).json()["metadata"]
    assert k.get(f"{CLUSTER_WIDGETS}/g").status_code == 200


def test_generate_name(k):
    r = k.post(CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}})
    assert r.status_code == 201 and re.fullmatch(r"job-[a-z0-9]{5}", r.json()["metadata"]["name"])
    r = k.post(CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert r.status_code == 422 and "name or generateName is required" in r.json()["message"]


def test_label_selectors(k):
    labels = {"a": {"app": "x", "tier": "web"}, "b": {"app": "y", "tier": "db"}, "c": {"app": "x"}, "d": {}}
    for name, lab in labels.items():
        body = cm(name)
        body["metadata"]["labels"] = lab
        k.post(CM, body)

    def sel(s):
        return [i["metadata"]["name"] for i in k.get(CM, params={"labelSelector": s}).json()["items"]]

    assert sel("app=x") == ["a", "c"]
    assert sel("app==x") == ["a", "c"]
    assert sel("app!=x") == ["b", "d"]
    assert sel("app in (x,y)") == ["a", "b", "c"]
    assert sel("tier notin (web)") == ["b", "c", "d"]
    assert sel("tier") == ["a", "b"]
    assert sel("!tier") == ["c", "d"]
    assert sel("app=x,tier=web") == ["a"]
    assert sel("app in (x), !tier") == ["c"]
    assert k.get(CM, params={"labelSelector": "app=(("}).status_code == 400


def test_field_selectors(k):
    k.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    k.post(WIDGETS, widget("w1"))
    k.post(WIDGETS, widget("w2"))
    k.post("/apis/test.dockyard.dev/v1/namespaces/other/widgets", widget("w1"))

    def names(p, s):
        return [
            (i["metadata"]["namespace"], i["metadata"]["name"])
            for i in k.get(p, params={"fieldSelector": s}).json()["items"]
        ]

    assert names(WIDGETS, "metadata.name=w2") == [("default", "w2")]
    assert names("/apis/test.dockyard.dev/v1/widgets", "metadata.name=w1") == [
        ("default", "w1"),
        ("other", "w1"),
    ]
    assert names("/apis/test.dockyard.dev/v1/widgets", "metadata.namespace=other") == [("other", "w1")]
    assert names("/apis/test.dockyard.dev/v1/widgets", "metadata.namespace!=other,metadata.name!=w1") == [
        ("default", "w2")
    ]
    r = k.get(WIDGETS, params={"fieldSelector": "spec.size=3"})
    assert r.status_code == 400 and "field label not supported" in r.json()["message"]


def test_owner_references_are_stored(k):
    owner = k.post(WIDGETS, widget()).json()
    ref = {
        "apiVersion": "test.dockyard.dev/v1",
        "kind": "Widget",
        "name": "w1",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    body = cm()
    body["metadata"]["ownerReferences"] = [ref]
    k.post(CM, body)
    assert k.get(f"{CM}/c1").json()["metadata"]["ownerReferences"] == [ref]


def test_events_core_and_events_k8s_io(k):
    ev = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "tr.1", "namespace": "default"},
        "involvedObject": {"kind": "TrainingRun", "name": "tr", "namespace": "default"},
        "reason": "Started",
        "message": "hello",
        "type": "Normal",
        "source": {"component": "dockyard"},
    }
    assert k.post("/api/v1/namespaces/default/events", ev).status_code == 201
    items = k.get(
        "/api/v1/namespaces/default/events", params={"fieldSelector": "involvedObject.name=tr"}
    ).json()
    assert [i["reason"] for i in items["items"]] == ["Started"]
    ev2 = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "tr.2"},
        "regarding": {"kind": "TrainingRun", "name": "tr"},
        "reason": "Done",
        "action": "Train",
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "dockyard",
        "reportingInstance": "x",
        "type": "Normal",
    }
    assert k.post("/apis/events.k8s.io/v1/namespaces/default/events", ev2).status_code == 201
    assert len(k.get("/apis/events.k8s.io/v1/events").json()["items"]) == 1


def test_errors_are_status_objects(k):
    r = k.get(f"{WIDGETS}/missing")
    assert r.status_code == 404
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'widgets.test.dockyard.dev "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "group": "test.dockyard.dev", "kind": "widgets"},
        "code": 404,
    }
    assert k.get("/apis/nope.dev/v1/things").status_code == 404
    r = k.put(WIDGETS, widget())
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = k.s.post(k.url + WIDGETS, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
    r = k.post(WIDGETS, {**widget(), "kind": "Gadget"})
    assert r.status_code == 400
    r = k.patch(f"{WIDGETS}/missing", {"spec": {}})
    assert r.status_code == 404


def test_builtin_defaults_and_immutable_fields(k):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "python:3.12"}]}
            }
        },
    }
    r = k.post("/apis/batch/v1/namespaces/default/jobs", job)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["backoffLimit"] == 6 and spec["completions"] == 1
    assert spec["template"]["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert (
        spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] == r.json()["metadata"]["uid"]
    )
    r = k.patch(
        "/apis/batch/v1/namespaces/default/jobs/j",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "python:3.13"}]}}}},
        "application/strategic-merge-patch+json",
    )
    assert r.status_code == 422 and "spec.template: Invalid value" in r.json()["message"]
    bad = {**job, "metadata": {"name": "j2"}}
    bad["spec"] = {
        "template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}
    }
    r = k.post("/apis/batch/v1/namespaces/default/jobs", bad)
    assert r.status_code == 422 and "spec.template.spec.restartPolicy" in r.json()["message"]
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "y"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    r = k.post("/apis/apps/v1/namespaces/default/deployments", dep)
    assert r.status_code == 422 and "`selector` does not match template `labels`" in r.json()["message"]
    sec = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    r = k.post("/api/v1/namespaces/default/secrets", sec).json()
    assert r["data"] == {"k": "dg=="} and "stringData" not in r


def test_namespace_deletion_removes_contents(k, emu):
    k.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}})
    k.post("/api/v1/namespaces/gone/configmaps", cm())
    r = k.delete("/api/v1/namespaces/gone")
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    wait_for(lambda: k.get("/api/v1/namespaces/gone").status_code == 404)
    assert k.get("/api/v1/namespaces/gone/configmaps/c1").status_code == 404


def test_dry_run_create_persists_nothing(k):
    r = k.post(CM, cm(), params={"dryRun": "All"})
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "c1"
    assert k.get(f"{CM}/c1").status_code == 404


def test_list_carries_collection_resource_version(k):
    k.post(CM, cm("x"))
    lst = k.get(CM).json()
    assert lst["kind"] == "ConfigMapList" and int(lst["metadata"]["resourceVersion"]) >= int(
        lst["items"][0]["metadata"]["resourceVersion"]
    )
