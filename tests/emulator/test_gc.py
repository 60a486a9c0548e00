"""Garbage collection of dependents (background, foreground, orphan)."""

from __future__ import annotations

from .conftest import WIDGETS, wait_for, widget

CM = "/api/v1/namespaces/default/configmaps"


def child(name, owner):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }


def test_background_deletion_collects_dependents(k):
    owner = k.post(WIDGETS, widget()).json()
    k.post(CM, child("c1", owner))
    grand = k.post(CM, child("c2", owner)).json()
    k.post(CM, child("c3", grand))
    k.post(CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}})
    k.delete(f"{WIDGETS}/w1")
    wait_for(lambda: [i["metadata"]["name"] for i in k.get(CM).json()["items"]] == ["unrelated"])


def test_dependents_with_another_live_owner_survive(k):
    a = k.post(WIDGETS, widget("a")).json()
    b = k.post(WIDGETS, widget("b")).json()
    body = child("shared", a)
    body["metadata"]["ownerReferences"].append(
        {**child("x", b)["metadata"]["ownerReferences"][0], "controller": False}
    )
    k.post(CM, body)
    k.post(CM, child("only-a", a))
    k.delete(f"{WIDGETS}/a")
    wait_for(lambda: k.get(f"{CM}/only-a").status_code == 404)
    assert k.get(f"{CM}/shared").status_code == 200


def test_foreground_deletion_waits_for_dependents(k):
    owner = k.post(WIDGETS, widget()).json()
    c = child("c1", owner)
    c["metadata"]["finalizers"] = ["test/hold"]
    k.post(CM, c)
    k.delete(f"{WIDGETS}/w1", {"propagationPolicy": "Foreground"})
    got = k.get(f"{WIDGETS}/w1").json()
    assert "foregroundDeletion" in got["metadata"]["finalizers"] and got["metadata"]["deletionTimestamp"]
    wait_for(lambda: k.get(f"{CM}/c1").json()["metadata"].get("deletionTimestamp"))
    assert k.get(f"{WIDGETS}/w1").status_code == 200  # still waiting for its dependent
    k.patch(f"{CM}/c1", {"metadata": {"finalizers": None}})
    wait_for(lambda: k.get(f"{WIDGETS}/w1").status_code == 404)


def test_orphan_deletion_keeps_dependents_without_owner_reference(k):
    owner = k.post(WIDGETS, widget()).json()
    k.post(CM, child("c1", owner))
    k.delete(f"{WIDGETS}/w1", {"propagationPolicy": "Orphan"})
    wait_for(lambda: k.get(f"{WIDGETS}/w1").status_code == 404)
    assert "ownerReferences" not in k.get(f"{CM}/c1").json()["metadata"]


def test_dependent_created_for_a_missing_owner_is_collected(k):
    ghost = {
        "apiVersion": "test.dockyard.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "ghost", "uid": "00000000-dead"},
    }
    k.post(CM, child("orphan", ghost))
    wait_for(lambda: k.get(f"{CM}/orphan").status_code == 404)
