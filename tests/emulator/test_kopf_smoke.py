"""A trivial kopf operator runs against the emulator and sees a create, an update and a delete."""

from __future__ import annotations

import threading

import kopf
import pytest

from .conftest import Client, example, wait_for

DS = "/apis/dockyard.dev/v1alpha1/namespaces/default/datasets"


@pytest.fixture
def operator(emu):
    registry = kopf.OperatorRegistry()
    seen: list[tuple[str, object]] = []

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=emu.url, token="dockyard-emulator", default_namespace="default")

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.peering.standalone = True
        settings.watching.server_timeout = 30
        settings.persistence.finalizer = "dockyard.dev/kopf-smoke"

    @kopf.on.create("dockyard.dev", "v1alpha1", "datasets", registry=registry)
    def created(body, spec, patch, **_):
        seen.append(("create", spec["source"]["format"]))
        patch.status["phase"] = "Seen"
        kopf.info(body, reason="Seen", message="the smoke operator saw it")

    @kopf.on.update("dockyard.dev", "v1alpha1", "datasets", registry=registry)
    def updated(old, new, diff, **_):
        seen.append(("update", new["spec"]["refreshInterval"]))

    @kopf.on.delete("dockyard.dev", "v1alpha1", "datasets", registry=registry)
    def deleted(name, **_):
        seen.append(("delete", name))

    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=kopf.run,
        kwargs=dict(
            registry=registry,
            standalone=True,
            namespaces=["default"],
            stop_flag=stop,
            ready_flag=ready,
        ),
        daemon=True,
    )
    thread.start()
    assert ready.wait(20), "kopf did not start"
    yield seen
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "kopf did not stop"


def test_kopf_sees_create_update_delete(emu, operator):
    k = Client(emu.url)
    seen = operator
    assert k.post(DS, example("Dataset")).status_code == 201
    wait_for(lambda: ("create", "csv") in seen, timeout=15)
    # kopf added its finalizer and wrote status/annotations back with merge patches
    obj = wait_for(
        lambda: (o := k.get(f"{DS}/iris").json()).get("status", {}).get("phase") == "Seen" and o, timeout=15
    )
    assert "dockyard.dev/kopf-smoke" in obj["metadata"]["finalizers"]
    assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
    assert k.patch(f"{DS}/iris", {"spec": {"refreshInterval": "20m"}}).status_code == 200
    wait_for(lambda: ("update", "20m") in seen, timeout=15)
    assert k.delete(f"{DS}/iris").status_code == 200
    wait_for(lambda: ("delete", "iris") in seen, timeout=15)
    wait_for(lambda: k.get(f"{DS}/iris").status_code == 404, timeout=15)
    assert [s[0] for s in seen] == ["create", "update", "delete"]
    # kopf posted events about its handlers
    events = wait_for(
        lambda: [
            e
            for e in k.get("/api/v1/namespaces/default/events").json()["items"]
            if e["involvedObject"]["name"] == "iris"
        ],
        timeout=15,
    )
    assert events[0]["reason"] == "Seen" and events[0]["involvedObject"]["kind"] == "Dataset"
    assert emu.counters.snapshot().get(("watch", "datasets"), 0) >= 1
