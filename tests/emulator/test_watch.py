"""Watch: resume from resourceVersion, event types, bookmarks, timeouts, 410 Gone, selectors, drops."""

from __future__ import annotations

import threading
import time

from tests.kubeapi.server import EmulatorThread

from .conftest import REPO, TESTDATA, WIDGETS, Client, example, wait_for, widget


def collect(k, path, stop_after=None, **params):
    out = []
    for ev in k.watch(path, **params):
        out.append(ev)
        if stop_after is not None and len(out) >= stop_after:
            break
    return out


def test_watch_resumes_from_list_resource_version(k):
    k.post(WIDGETS, widget("w1"))
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    k.post(WIDGETS, widget("w2"))
    k.patch(f"{WIDGETS}/w1", {"spec": {"size": 5}})
    k.delete(f"{WIDGETS}/w2")
    events = collect(k, WIDGETS, stop_after=3, resourceVersion=rv, timeoutSeconds=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w2"),
        ("MODIFIED", "w1"),
        ("DELETED", "w2"),
    ]
    assert events[1]["object"]["spec"]["size"] == 5
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert events[0]["object"]["apiVersion"] == "test.dockyard.dev/v1"


def test_watch_without_resource_version_starts_with_synthetic_added(k):
    k.post(WIDGETS, widget("w1"))
    k.post(WIDGETS, widget("w2"))
    events = collect(k, WIDGETS, stop_after=2, timeoutSeconds=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"),
        ("ADDED", "w2"),
    ]
    events = collect(k, WIDGETS, stop_after=2, resourceVersion="0", timeoutSeconds=5)
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]


def test_live_events_and_timeout_seconds(k, emu):
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    got = []
    started = time.monotonic()

    def run():
        got.extend(collect(Client(emu.url), WIDGETS, resourceVersion=rv, timeoutSeconds=1))

    t = threading.Thread(target=run)
    t.start()
    k.post(WIDGETS, widget("live"))
    t.join(10)
    elapsed = time.monotonic() - started
    assert not t.is_alive()
    assert 0.9 <= elapsed < 5, elapsed  # the server ended the stream after timeoutSeconds
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [("ADDED", "live")]


def test_bookmarks_when_allowed(k):
    k.post(WIDGETS, widget("w1"))
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    events = collect(k, WIDGETS, stop_after=1, resourceVersion=rv, allowWatchBookmarks=True, timeoutSeconds=5)
    assert events[0]["type"] == "BOOKMARK"
    obj = events[0]["object"]
    assert obj["kind"] == "Widget" and obj["apiVersion"] == "test.dockyard.dev/v1"
    assert int(obj["metadata"]["resourceVersion"]) >= int(rv)
    no_bookmarks = collect(k, WIDGETS, resourceVersion=rv, timeoutSeconds=1)
    assert no_bookmarks == []


def test_send_initial_events_ends_with_annotated_bookmark(k):
    k.post(WIDGETS, widget("w1"))
    events = collect(
        k,
        WIDGETS,
        stop_after=2,
        sendInitialEvents=True,
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks=True,
        timeoutSeconds=5,
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_410_gone_after_expire_history(k, emu):
    k.post(WIDGETS, widget("w1"))
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    k.post(WIDGETS, widget("w2"))
    emu.faults.expire_history()
    events = collect(k, WIDGETS, resourceVersion=rv, timeoutSeconds=5)  # the server ends it at once
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    st = events[0]["object"]
    assert st["kind"] == "Status" and st["code"] == 410 and st["reason"] == "Expired"
    assert st["message"].startswith(f"too old resource version: {rv} (")
    # a fresh list gives a usable resourceVersion again
    rv2 = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    k.post(WIDGETS, widget("w3"))
    assert [e["type"] for e in collect(k, WIDGETS, stop_after=1, resourceVersion=rv2, timeoutSeconds=5)] == [
        "ADDED"
    ]


def test_410_gone_when_history_limit_exceeded():
    with EmulatorThread(crd_dirs=[TESTDATA], history_limit=3) as emu:
        k = Client(emu.url)
        k.post(WIDGETS, widget("w0"))
        rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
        for i in range(1, 6):
            k.post(WIDGETS, widget(f"w{i}"))
        events = collect(k, WIDGETS, resourceVersion=rv, timeoutSeconds=5)
        assert [e["type"] for e in events] == ["ERROR"] and events[0]["object"]["code"] == 410
        r = k.get(WIDGETS, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"})
        assert r.status_code == 410 and r.json()["reason"] == "Expired"


def test_watch_with_label_selector_sees_transitions(k):
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    k.post(WIDGETS, widget("w1"))
    k.patch(f"{WIDGETS}/w1", {"metadata": {"labels": {"team": "a"}}})
    k.patch(f"{WIDGETS}/w1", {"spec": {"size": 4}})
    k.patch(f"{WIDGETS}/w1", {"metadata": {"labels": {"team": "b"}}})
    events = collect(k, WIDGETS, stop_after=3, resourceVersion=rv, labelSelector="team=a", timeoutSeconds=5)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_single_object_by_field_selector_and_legacy_watch_path(k):
    k.post(WIDGETS, widget("w1"))
    k.post(WIDGETS, widget("w2"))
    k.post(WIDGETS, widget("w3"))
    events = collect(k, WIDGETS, stop_after=2, fieldSelector="metadata.name!=w2", timeoutSeconds=5)
    assert [e["object"]["metadata"]["name"] for e in events] == ["w1", "w3"]
    legacy = "/apis/test.dockyard.dev/v1/watch/namespaces/default/widgets"
    assert len(collect(k, legacy, stop_after=3, timeoutSeconds=5)) == 3


def test_drop_watches_ends_open_streams(k, emu):
    rv = k.get(WIDGETS).json()["metadata"]["resourceVersion"]
    done = threading.Event()
    got = []

    def run():
        got.extend(collect(Client(emu.url), WIDGETS, resourceVersion=rv, timeoutSeconds=60))
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: emu.store._subscribers, timeout=5)
    k.post(WIDGETS, widget("w1"))  # queued to the watcher before the drop below
    emu.faults.drop_watches()
    assert done.wait(5), "watch stream was not dropped"
    assert [e["object"]["metadata"]["name"] for e in got] == ["w1"]


def test_kubernetes_python_client_watch_stream(emu, kubeconfig):
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(str(kubeconfig))
    co = client.CustomObjectsApi(api_client)
    co.create_namespaced_custom_object("test.dockyard.dev", "v1", "default", "widgets", widget("w1"))
    lst = co.list_namespaced_custom_object("test.dockyard.dev", "v1", "default", "widgets")
    rv = lst["metadata"]["resourceVersion"]
    co.patch_namespaced_custom_object(
        "test.dockyard.dev", "v1", "default", "widgets", "w1", {"spec": {"size": 2}}
    )
    co.delete_namespaced_custom_object("test.dockyard.dev", "v1", "default", "widgets", "w1")
    w = watch.Watch()
    seen = []
    for ev in w.stream(
        co.list_namespaced_custom_object,
        "test.dockyard.dev",
        "v1",
        "default",
        "widgets",
        resource_version=rv,
        timeout_seconds=5,
    ):
        seen.append((ev["type"], ev["object"]["metadata"]["name"]))
        if len(seen) == 2:
            w.stop()
    assert seen == [("MODIFIED", "w1"), ("DELETED", "w1")]
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
    )
    events = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5):
        events.append((ev["type"], ev["object"].metadata.name, ev["object"].data))
        w.stop()
    assert events == [("ADDED", "c", {"a": "1"})]
    api_client.close()


def test_repo_crds_are_watchable():
    # sanity: the repo's CRDs load and their kinds are watchable
    with EmulatorThread(crd_dirs=[REPO / "crds"]) as emu:
        k = Client(emu.url)
        k.post("/apis/dockyard.dev/v1alpha1/namespaces/default/datasets", example("Dataset"))
        events = collect(k, "/apis/dockyard.dev/v1alpha1/datasets", stop_after=1, timeoutSeconds=5)
        assert events[0]["object"]["metadata"]["name"] == "iris"
