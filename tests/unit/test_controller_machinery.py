"""The reconcile machinery: work queue semantics, status diffs, conditions, labels."""

from __future__ import annotations

import asyncio

import pytest

from dockyard.conditions import set_condition, summarize
from dockyard.controllers.base import WorkQueue, needs_apply, status_patch
from dockyard.labels import child_name, label_value, stamp_spec_hash


async def test_queue_deduplicates_and_serialises_a_key() -> None:
    q = WorkQueue()
    key = ("TrainingRun", "ns", "a")
    q.add(key)
    q.add(key)
    assert len(q) == 1
    got = await asyncio.wait_for(q.get(), 1)
    assert got == key
    q.add(key)  # arrives while processing: must not be handed to a second worker now
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.05)
    q.done(key)  # ...but runs again afterwards
    assert await asyncio.wait_for(q.get(), 1) == key


async def test_delayed_keys_fire_once_and_earliest_wins() -> None:
    q = WorkQueue()
    timer = asyncio.create_task(q.run_timer())
    try:
        key = ("Dataset", "ns", "d")
        q.add_after(key, 5.0)
        q.add_after(key, 0.05)  # earlier wake-up replaces the later one
        got = await asyncio.wait_for(q.get(), 2)
        assert got == key
        q.done(key)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.2)
    finally:
        timer.cancel()


def test_status_patch_only_when_different() -> None:
    assert status_patch({"phase": "Ready"}, {"phase": "Ready"}) is None
    assert status_patch({"phase": "Running", "jobName": "j"}, {"phase": "Ready"}) == {
        "phase": "Ready",
        "jobName": None,
    }
    assert status_patch(None, {"phase": "Pending"}) == {"phase": "Pending"}


def test_condition_transition_time_moves_only_on_status_change() -> None:
    conds = set_condition(None, "Ready", "False", "A", "m", 1, now="t1")
    same = set_condition(conds, "Ready", "False", "B", "m2", 1, now="t2")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    flipped = set_condition(same, "Ready", "True", "C", "", 2, now="t3")
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["observedGeneration"] == 2
    assert set_condition(flipped, "Ready", "True", "C", "", 2, now="t4") == flipped


def test_summarize_follows_kstatus() -> None:
    working = summarize(None, ready=None, reason="Training", message="", generation=1)
    types = {c["type"]: c["status"] for c in working}
    assert types == {"Ready": "Unknown", "Reconciling": "True"}
    failed = summarize(working, ready=False, reason="Failed", message="x", generation=1, stalled=True)
    assert {c["type"]: c["status"] for c in failed} == {"Ready": "False", "Stalled": "True"}
    done = summarize(failed, ready=True, reason="Ok", message="", generation=1)
    assert {c["type"]: c["status"] for c in done} == {"Ready": "True"}


def test_needs_apply_compares_spec_hash() -> None:
    desired = stamp_spec_hash(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"a": 1}}
    )
    assert needs_apply(None, desired)
    existing = {"metadata": {"annotations": dict(desired["metadata"]["annotations"])}, "status": {"x": 1}}
    assert not needs_apply(existing, desired)
    changed = stamp_spec_hash(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"a": 2}}
    )
    assert needs_apply(existing, changed)


@pytest.mark.parametrize(
    "raw,expected", [("1.0.0", "1.0.0"), ("a b/c", "a-b-c"), ("-x-", "x"), ("v" * 70, "v" * 63)]
)
def test_label_value_is_always_valid(raw: str, expected: str) -> None:
    assert label_value(raw) == expected


def test_child_name_is_bounded_and_distinct() -> None:
    a, b = child_name("m" * 60, "variant-a"), child_name("m" * 60, "variant-b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert child_name("iris", "router") == "iris-router"


async def test_keys_waiting_on_mlflow_resume_when_it_answers() -> None:
    """A reconcile that failed on MLflow is retried as soon as MLflow answers, not after its backoff."""
    from types import SimpleNamespace

    from dockyard.config import OperatorConfig
    from dockyard.controllers.base import Cache, Context, MlflowWaitError, Result, Runtime

    class Pinged:
        up = False

        async def ping(self) -> bool:
            return self.up

    class NoEvents:
        async def drain(self) -> None:
            return None

    mlflow = Pinged()
    ctx = Context(kube=SimpleNamespace(), mlflow=mlflow, cfg=OperatorConfig(), cache=Cache(),  # type: ignore[arg-type]
                  queue=WorkQueue(), events=NoEvents())  # type: ignore[arg-type]
    calls: list[float] = []
    done = asyncio.Event()

    async def reconcile(_: Context, body: dict) -> Result:
        calls.append(asyncio.get_running_loop().time())
        if not mlflow.up:
            raise MlflowWaitError("MLflow down")
        done.set()
        return Result()

    runtime = Runtime(ctx)
    runtime.MLFLOW_PING_INTERVAL = 0.05
    runtime.MLFLOW_MAX_BACKOFF = 60.0  # so only the watcher can bring it back quickly
    runtime._failures[("TrainingRun", "ns", "a")] = 10  # deep into backoff already
    runtime.register("TrainingRun", reconcile)
    runtime.observe("TrainingRun", "ADDED", {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "1"}})
    await runtime.start(workers=1)
    try:
        await asyncio.wait_for(_until(lambda: len(calls) == 1), 2)
        mlflow.up = True
        await asyncio.wait_for(done.wait(), 2)  # far sooner than the 60 s backoff
        assert len(calls) == 2
    finally:
        await runtime.stop()


async def _until(pred: object) -> None:
    while not pred():  # type: ignore[operator]
        await asyncio.sleep(0.01)
