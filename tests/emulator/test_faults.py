"""Fault injection and request counters."""

from __future__ import annotations

import time

from .conftest import TR_PATH, WIDGETS, example, widget


def test_fail_next_with_count_and_retry_after(k, emu):
    emu.faults.fail_next("POST", r"/widgets$", 429, count=2, retry_after=3)
    for _ in range(2):
        r = k.post(WIDGETS, widget())
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "3"
        st = r.json()
        assert st["reason"] == "TooManyRequests" and st["details"]["retryAfterSeconds"] == 3
    assert k.post(WIDGETS, widget()).status_code == 201


def test_fail_next_matches_method_and_path(k, emu):
    k.post(WIDGETS, widget())
    emu.faults.fail_next("PATCH", r"/widgets/w1/status", 500)
    assert k.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}}).status_code == 200  # other path
    assert k.get(f"{WIDGETS}/w1").status_code == 200  # other method
    r = k.patch(f"{WIDGETS}/w1/status", {"status": {"phase": "x"}})
    assert r.status_code == 500 and r.json()["reason"] == "InternalError"
    assert k.patch(f"{WIDGETS}/w1/status", {"status": {"phase": "x"}}).status_code == 200
    emu.faults.fail_next("*", r"widgets", 409)
    assert k.get(WIDGETS).status_code == 409
    emu.faults.fail_next("GET", r"widgets", 503)
    emu.faults.clear()
    assert k.get(WIDGETS).status_code == 200


def test_latency(k, emu):
    emu.faults.add_latency(0.3, method="GET", path_regex=r"/widgets")
    t = time.monotonic()
    k.get(WIDGETS)
    assert time.monotonic() - t >= 0.3
    t = time.monotonic()
    k.get("/api/v1/namespaces/default/configmaps")
    assert time.monotonic() - t < 0.3
    emu.faults.clear()
    t = time.monotonic()
    k.get(WIDGETS)
    assert time.monotonic() - t < 0.3


def test_counters_by_verb_and_resource(k, emu):
    emu.counters.reset()
    k.post(TR_PATH, example("TrainingRun"))
    k.get(f"{TR_PATH}/iris-rf")
    k.get(TR_PATH)
    snap = emu.counters.snapshot()
    k.patch(f"{TR_PATH}/iris-rf/status", {"status": {"phase": "Running"}})
    k.patch(f"{TR_PATH}/iris-rf", {"metadata": {"labels": {"a": "b"}}})
    k.delete(f"{TR_PATH}/iris-rf")
    assert snap == {("create", "trainingruns"): 1, ("get", "trainingruns"): 1, ("list", "trainingruns"): 1}
    assert emu.counters.writes(since=snap) == {
        ("patch", "trainingruns/status"): 1,
        ("patch", "trainingruns"): 1,
        ("delete", "trainingruns"): 1,
    }
    assert emu.counters.writes()[("create", "trainingruns")] == 1
    list(k.watch(TR_PATH, timeoutSeconds=0))
    assert emu.counters.snapshot()[("watch", "trainingruns")] == 1
    emu.counters.reset()
    assert emu.counters.snapshot() == {}
