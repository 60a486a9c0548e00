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


def test_status_patch_clears_a_key_gone_from_a_nested_object() -> None:
    # A merge patch merges nested objects, so the cleared key must be named there.
    old = {"phase": "Ready", "rollout": {"phase": "Progressing", "step": 1, "trafficSince": "t1"}}
    new = {"phase": "Ready", "rollout": {"phase": "Progressing", "step": 2}}
    assert status_patch(old, new) == {"rollout": {"step": 2, "trafficSince": None}}


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


def test_needs_apply_on_spec_change_and_on_drift() -> None:
    from dockyard.controllers.base import slim

    desired = stamp_spec_hash(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}}
    )
    assert needs_apply(None, desired)
    hashed = dict(desired["metadata"]["annotations"])
    ours = {"manager": "dockyard", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    status = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
              "fieldsV1": {"f:status": {}}}
    existing = {"metadata": {"uid": "u", "generation": 2, "annotations": hashed, "managedFields": [ours, status]}}
    assert not needs_apply(existing, desired)
    changed = stamp_spec_hash(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2}}
    )
    assert needs_apply(existing, changed)
    # Drift: after a restart, known only from managedFields (kept in the cache by slim)...
    scaled = {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    edited = {"metadata": {**existing["metadata"], "managedFields": [ours, status, scaled]}}
    assert needs_apply(slim(edited, keep_spec=False), desired)
    labelled = {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}}
    assert not needs_apply({"metadata": {**existing["metadata"], "managedFields": [ours, labelled]}}, desired)
    # ...and once applied, from the generation our apply returned.
    assert not needs_apply(edited, desired, applied={"u": "g2"})
    assert needs_apply({"metadata": {**edited["metadata"], "generation": 3}}, desired, applied={"u": "g2"})


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
    ctx = Context(kube=ListedKube({}), mlflow=mlflow, cfg=OperatorConfig(), cache=Cache(),  # type: ignore[arg-type]
                  queue=WorkQueue(), events=NoEvents(), registry=None)  # type: ignore[arg-type]
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


# -- the informer contract: start-up list, re-list, opaque resourceVersions, state by uid ------


class ListedKube:
    """A kube client whose lists return fixed objects; lists of ``held`` kinds (default: all)
    wait until ``release`` is set."""

    def __init__(self, objects: dict[str, list[dict]], release: asyncio.Event | None = None,
                 held: tuple[str, ...] = ()) -> None:
        self.objects = objects
        self.release = release
        self.held = held
        self.lists: list[str] = []

    async def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[dict]:
        self.lists.append(kind)
        if self.release is not None and (not self.held or kind in self.held):
            await self.release.wait()
        return [o for o in self.objects.get(kind, []) if namespace in (None, o["metadata"]["namespace"])]


def _obj(kind: str, name: str, rv: str = "x1", uid: str | None = None, **fields: object) -> dict:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": kind,
            "metadata": {"namespace": "ns", "name": name, "uid": uid or f"uid-{name}", "resourceVersion": rv},
            **fields}


def _runtime(kube: ListedKube) -> tuple:
    from dockyard.config import OperatorConfig
    from dockyard.controllers.base import Cache, Context, Runtime, Watched

    class NoEvents:
        async def drain(self) -> None:
            return None

    ctx = Context(kube=kube, mlflow=None, cfg=OperatorConfig(), cache=Cache(),  # type: ignore[arg-type]
                  queue=WorkQueue(), events=NoEvents(), registry=None)  # type: ignore[arg-type]
    runtime = Runtime(ctx, namespaces=["ns"])
    for kind in ("Dataset", "TrainingRun"):
        runtime.watch(Watched(kind, "dockyard.dev/v1alpha1"))
    return ctx, runtime


async def test_no_reconcile_before_every_watched_kind_is_listed() -> None:
    """A TrainingRun's watch event may arrive before its Dataset's: it must not be judged
    (written back as WaitingForData) on a cache that does not know the Dataset yet."""
    from dockyard.controllers.base import Result

    release = asyncio.Event()
    kube = ListedKube({"Dataset": [_obj("Dataset", "d")], "TrainingRun": [_obj("TrainingRun", "t")]}, release)
    ctx, runtime = _runtime(kube)
    seen: list[bool] = []

    async def reconcile(c: object, body: dict) -> Result:
        seen.append(ctx.cache.get(("Dataset", "ns", "d")) is not None)
        return Result()

    runtime.register("TrainingRun", reconcile)
    await runtime.start(workers=2)
    try:
        runtime.observe("TrainingRun", None, _obj("TrainingRun", "t"))  # kopf's list got here first
        await asyncio.sleep(0.2)  # long enough for a worker to take the key, if one were running
        assert seen == []
        release.set()
        await asyncio.wait_for(_until(lambda: seen), 2)
        assert seen == [True]
    finally:
        await runtime.stop()


async def test_relist_drops_objects_deleted_while_the_watch_was_down() -> None:
    """A 410 re-list sends no DELETED: the periodic list removes what is gone (its state too), and
    keeps what the watch delivered after the list began."""
    from dockyard.controllers.base import Result

    kube = ListedKube({"TrainingRun": [_obj("TrainingRun", "kept")]})
    ctx, runtime = _runtime(kube)
    forgotten: list[str] = []

    async def reconcile(c: object, body: dict) -> Result:
        return Result()

    runtime.register("TrainingRun", reconcile, forget=lambda c, body: forgotten.append(body["metadata"]["name"]))
    runtime.observe("TrainingRun", "ADDED", _obj("TrainingRun", "kept"))
    runtime.observe("TrainingRun", "ADDED", _obj("TrainingRun", "gone"))
    await runtime.sync()
    assert ctx.cache.get(("TrainingRun", "ns", "gone")) is None
    assert ctx.cache.get(("TrainingRun", "ns", "kept")) is not None
    # An object the watch delivers while a list is in flight is newer than that list: kept.
    kube.release, kube.held = asyncio.Event(), ("TrainingRun",)
    listing = asyncio.create_task(runtime.sync())
    await asyncio.wait_for(_until(lambda: kube.lists.count("TrainingRun") == 2), 1)  # in flight
    runtime.observe("TrainingRun", "ADDED", _obj("TrainingRun", "new"))
    kube.release.set()
    await listing
    assert ctx.cache.get(("TrainingRun", "ns", "new")) is not None


def test_the_cache_never_steps_back_over_our_own_write() -> None:
    """resourceVersions are opaque: the cache keeps the body our writes returned while the watch
    delivers the versions those writes replaced, and takes anything else, including a newer
    version when kopf coalesced ours away."""
    from dockyard.controllers.base import Cache

    cache = Cache()
    key = ("TrainingRun", "ns", "t")

    def event(rv: str, phase: str, uid: str = "uid-t") -> dict:
        return _obj("TrainingRun", "t", rv=rv, uid=uid, status={"phase": phase})

    assert cache.observe(key, event("b7", "Pending"))
    cache.put_written(key, event("a9", "Running"))  # two writes in one reconcile
    cache.put_written(key, event("k2", "Running"))
    assert not cache.observe(key, event("a9", "Running"))  # replaced by our second write
    assert cache.get(key)["metadata"]["resourceVersion"] == "k2"  # type: ignore[index]
    # The watch skips k2 (coalesced) and brings a newer version: taken, whatever it sorts like.
    assert cache.observe(key, event("0", "Succeeded"))
    assert cache.get(key)["status"]["phase"] == "Succeeded"  # type: ignore[index]
    # A new object under the same name is never held back.
    cache.put_written(key, event("z", "Running"))
    assert cache.observe(key, event("b7", "Pending", uid="other"))


def test_a_deleted_deployments_state_goes_with_it() -> None:
    from dockyard.controllers import modeldeployment
    from dockyard.controllers.state import Resolution

    ctx, runtime = _runtime(ListedKube({}))
    runtime.register("ModelDeployment", modeldeployment.reconcile, forget=modeldeployment.forget)
    md = _obj("ModelDeployment", "iris")
    runtime.observe("ModelDeployment", "ADDED", md)
    ctx.state.deployments("uid-iris").resolution = Resolution(1, 0.0, {"a": "1"}, {"a": "s"})
    runtime.observe("ModelDeployment", "DELETED", md)
    assert ctx.state.deployments.peek("uid-iris") is None
    assert ctx.cache.get(("ModelDeployment", "ns", "iris")) is None


def test_a_stuck_job_says_why() -> None:
    """No Job condition reports a Pod that can never run; stuck_reason reads it from the Pods."""
    from datetime import UTC, datetime, timedelta

    from dockyard.controllers.common import NO_POD_GRACE_SECONDS, stuck_reason

    created = datetime(2026, 12, 1, tzinfo=UTC)
    job = {"metadata": {"name": "tr-train-1", "creationTimestamp": "2026-12-01T00:00:00Z"}}
    assert stuck_reason(job, [], now=created + timedelta(seconds=5)) is None  # still starting
    reason, message = stuck_reason(job, [], now=created + timedelta(seconds=NO_POD_GRACE_SECONDS + 1)) or ("", "")
    assert reason == "PodsNotCreated" and "describe job tr-train-1" in message

    def pod(**status: object) -> dict:
        return {"metadata": {"name": "p"}, "status": status}

    unschedulable = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}])
    assert stuck_reason(job, [unschedulable]) == (
        "Unschedulable", "Pod p: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    bad_image = pod(containerStatuses=[{"name": "train", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "acme/trainer:typo"'}}}])
    assert stuck_reason(job, [bad_image]) == (
        "ImagePullBackOff", 'Pod p, container train: Back-off pulling image "acme/trainer:typo"')
    starting = pod(containerStatuses=[{"name": "train", "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert stuck_reason(job, [starting]) is None
