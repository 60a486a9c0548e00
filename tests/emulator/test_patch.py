"""Patch types: merge patch, JSON patch, strategic merge (built-ins), server-side apply."""

from __future__ import annotations

from .conftest import WIDGETS, widget

DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def deployment():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "app:1",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        },
                        {"name": "sidecar", "image": "side:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def test_merge_patch_rfc7386(k):
    k.post(WIDGETS, widget(labels={"a": "x", "b": "y"}, tags=["p", "q"]))
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"labels": {"a": None, "c": "z"}, "tags": ["r"], "size": 7}})
    spec = r.json()["spec"]
    assert spec["labels"] == {"b": "y", "c": "z"} and spec["tags"] == ["r"] and spec["size"] == 7


def test_json_patch_rfc6902(k):
    k.post(WIDGETS, widget(tags=["p"]))
    ops = [
        {"op": "add", "path": "/spec/tags/-", "value": "q"},
        {"op": "replace", "path": "/spec/size", "value": 9},
        {"op": "test", "path": "/spec/color", "value": "red"},
        {"op": "copy", "from": "/spec/color", "path": "/metadata/labels"},
        {"op": "remove", "path": "/metadata/labels"},
        {"op": "add", "path": "/metadata/labels", "value": {"k~/": "v"}},
        {"op": "move", "from": "/metadata/labels/k~0~1", "path": "/metadata/annotations"},
    ]
    r = k.patch(
        f"{WIDGETS}/w1",
        [*ops[:3], {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}],
        "application/json-patch+json",
    )
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["tags"] == ["p", "q"] and r.json()["spec"]["size"] == 9
    r = k.patch(
        f"{WIDGETS}/w1",
        [{"op": "test", "path": "/spec/color", "value": "blue"}],
        "application/json-patch+json",
    )
    assert r.status_code == 422
    r = k.patch(f"{WIDGETS}/w1", [{"op": "remove", "path": "/spec/nothere"}], "application/json-patch+json")
    assert r.status_code == 422
    r = k.patch(
        f"{WIDGETS}/w1", [{"op": "remove", "path": "/metadata/annotations/x"}], "application/json-patch+json"
    )
    assert r.status_code == 200 and "x" not in (r.json()["metadata"].get("annotations") or {})


def test_strategic_merge_patch_merges_lists_by_name(k):
    assert k.post(DEPLOY, deployment()).status_code == 201
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "app:2",
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 9090, "name": "metrics"}],
                            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                }
            }
        }
    }
    r = k.patch(f"{DEPLOY}/d", patch, "application/strategic-merge-patch+json")
    assert r.status_code == 200, r.text
    pod = r.json()["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["main", "sidecar"]
    main = pod["containers"][0]
    assert main["image"] == "app:2"
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    assert [p["containerPort"] for p in main["ports"]] == [8080, 9090]
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/data", "/cache"]
    assert [v["name"] for v in pod["volumes"]] == ["data", "cache"]
    # $patch: delete removes one list element
    r = k.patch(
        f"{DEPLOY}/d",
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
        "application/strategic-merge-patch+json",
    )
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["main"]
    # a merge patch replaces lists wholesale
    r = k.patch(
        f"{DEPLOY}/d", {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}}
    )
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["only"]


def test_strategic_merge_is_415_for_custom_resources(k):
    k.post(WIDGETS, widget())
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}}, "application/strategic-merge-patch+json")
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}}, "text/plain")
    assert r.status_code == 415


def test_server_side_apply_creates_then_updates(k):
    r = k.apply(f"{WIDGETS}/w1", widget(size=3))
    assert r.status_code == 201, r.text
    mf = r.json()["metadata"]["managedFields"]
    assert mf[0]["manager"] == "tester" and mf[0]["operation"] == "Apply"
    assert "f:size" in mf[0]["fieldsV1"]["f:spec"]
    r = k.apply(f"{WIDGETS}/w1", widget(size=4))
    assert r.status_code == 200 and r.json()["spec"]["size"] == 4
    assert r.json()["metadata"]["generation"] == 2
    # re-applying the same configuration changes nothing
    rv = r.json()["metadata"]["resourceVersion"]
    assert k.apply(f"{WIDGETS}/w1", widget(size=4)).json()["metadata"]["resourceVersion"] == rv


def test_server_side_apply_requires_field_manager(k):
    import yaml

    r = k.patch(f"{WIDGETS}/w1", yaml.safe_dump(widget()), "application/apply-patch+yaml")
    assert r.status_code == 400 and "fieldManager" in r.json()["message"]


def test_server_side_apply_conflicts_and_force(k):
    k.apply(f"{WIDGETS}/w1", widget(size=3), manager="alice")
    r = k.apply(f"{WIDGETS}/w1", widget(size=5), manager="bob")
    assert r.status_code == 409
    st = r.json()
    assert (
        st["reason"] == "Conflict"
        and 'conflict with "alice"' in st["message"]
        and ".spec.size" in st["message"]
    )
    assert st["details"]["causes"][0] == {
        "reason": "FieldManagerConflict",
        "message": 'conflict with "alice"',
        "field": ".spec.size",
    }
    # same value: shared ownership, no conflict
    assert k.apply(f"{WIDGETS}/w1", widget(size=3), manager="bob").status_code == 200
    # force takes ownership
    r = k.apply(f"{WIDGETS}/w1", widget(size=6), manager="carol", force=True)
    assert r.status_code == 200 and r.json()["spec"]["size"] == 6
    owners = {e["manager"]: e["fieldsV1"] for e in r.json()["metadata"]["managedFields"]}
    assert "f:size" in owners["carol"]["f:spec"]
    assert "f:size" not in owners.get("alice", {}).get("f:spec", {})


def test_server_side_apply_conflicts_with_update_managers(k):
    k.apply(f"{WIDGETS}/w1", widget(size=3), manager="alice")
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"size": 8}}, params={"fieldManager": "editor"})
    assert r.status_code == 200
    r = k.apply(f"{WIDGETS}/w1", widget(size=3), manager="alice")
    assert r.status_code == 409 and '"editor"' in r.json()["message"]


def test_server_side_apply_removes_fields_no_longer_applied(k):
    k.apply(f"{WIDGETS}/w1", widget(tags=["a"], minSize=1), manager="alice")
    k.apply(f"{WIDGETS}/w1", widget(labels={"x": "y"}), manager="bob")
    body = widget()
    r = k.apply(f"{WIDGETS}/w1", body, manager="alice")
    spec = r.json()["spec"]
    assert "tags" not in spec and "minSize" not in spec
    assert spec["labels"] == {"x": "y"}  # owned by bob, untouched


def test_server_side_apply_merges_list_map_items_by_key(k):
    k.apply(f"{WIDGETS}/w1", widget(items=[{"name": "a", "weight": 1, "version": "1"}]), manager="alice")
    # bob adds his own item to the list-type=map list without touching alice's
    bob = {
        "apiVersion": "test.dockyard.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3, "items": [{"name": "b", "weight": 2, "alias": "x"}]},
    }
    r = k.apply(f"{WIDGETS}/w1", bob, manager="bob")
    assert r.status_code == 200, r.text
    assert [i["name"] for i in r.json()["spec"]["items"]] == ["a", "b"]


def test_server_side_apply_status_subresource(k):
    k.apply(f"{WIDGETS}/w1", widget())
    body = {
        "apiVersion": "test.dockyard.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "status": {"phase": "Applied"},
        "spec": {"size": 9},
    }
    r = k.apply(f"{WIDGETS}/w1/status", body, manager="ctrl")
    assert (
        r.status_code == 200 and r.json()["status"] == {"phase": "Applied"} and r.json()["spec"]["size"] == 3
    )
    r = k.apply(f"{WIDGETS}/w1", {**widget(), "status": {"phase": "ignored"}})
    assert r.json()["status"] == {"phase": "Applied"}


def test_server_side_apply_builtin_containers_by_name(k):
    k.apply(f"{DEPLOY}/d", deployment(), manager="op")
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"] = [{"name": "debug", "image": "busybox"}]
    dep["spec"]["template"]["spec"].pop("volumes")
    r = k.apply(
        f"{DEPLOY}/d",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}},
        },
        manager="human",
    )
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == [
        "main",
        "sidecar",
        "debug",
    ]


def test_apply_removing_a_list_map_item_removes_it_whole() -> None:
    """SSA with list-type map: dropping an item from the applied config deletes that item."""
    from tests.kubeapi import patch as p

    live = [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}, {"name": "c", "weight": 3}]
    obj = {"spec": {"variants": live}}
    for leaf in (("spec", "variants", ("k", '{"name":"b"}'), "name"),
                 ("spec", "variants", ("k", '{"name":"b"}'), "weight")):
        p._delete_path(obj, leaf)
    assert obj["spec"]["variants"] == [{"name": "a", "weight": 1}, {"name": "c", "weight": 3}]
