"""The reconcile machinery every controller shares.

kopf watches (with resume, bookmarks and 410 handling) and runs the liveness
probe; it hands every watch event to :meth:`Runtime.observe`, which updates an in-memory
cache (an informer) and enqueues the key. Workers pull keys from a de-duplicating
:class:`WorkQueue` and call the controller's level-based ``reconcile``:

* a key is never reconciled by two workers at once; an event arriving mid-reconcile
  re-queues it once afterwards (nothing is lost, nothing runs twice concurrently);
* ``reconcile`` returns how long until it wants to look again (Job polling, alias refresh,
  dataset refresh) or raises, which re-queues with exponential backoff;
* status is written only when it differs from what the cache holds, and children only when
  their spec hash differs, so a converged system makes no API writes.

Why not kopf's change handlers: they persist progress in annotations/status (writes on every
retry) and treat each change as a one-shot handler, while an operator that must survive
SIGKILL at any point is simpler as an idempotent "make it so" function.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..conditions import now_rfc3339, summarize
from ..config import OperatorConfig
from ..kube import FIELD_MANAGER, ApiError, KubeClient
from ..labels import SPEC_HASH_ANNOTATION
from ..mlflow_client import MlflowClient
from ..registry_access import RegistryRefused, WorkloadCredentials
from .state import ControllerState

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class Result:
    """What a reconcile wants next: look again after `requeue_after` seconds (None = only on events)."""

    requeue_after: float | None = None


class WorkQueue:
    """Keys to reconcile, de-duplicated, with delayed entries and per-key exclusivity."""

    def __init__(self) -> None:
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []
        self._delayed_due: dict[Key, float] = {}
        self._seq = 0
        self._wakeup = asyncio.Event()

    def add(self, key: Key) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        due = time.monotonic() + delay
        current = self._delayed_due.get(key)
        if current is not None and current <= due:
            return  # an earlier wake-up is already scheduled
        self._delayed_due[key] = due
        self._seq += 1
        heapq.heappush(self._delayed, (due, self._seq, key))
        self._wakeup.set()

    async def get(self) -> Key:
        key = await self._ready.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: Key) -> None:
        self._delayed_due.pop(key, None)

    async def run_timer(self) -> None:
        """Moves delayed keys to the ready queue when due."""
        while True:
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                due, _, key = heapq.heappop(self._delayed)
                if self._delayed_due.get(key) == due:
                    del self._delayed_due[key]
                    self.add(key)
            timeout = self._delayed[0][0] - now if self._delayed else 3600.0
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(timeout, 0.001))
            except TimeoutError:
                pass

    def __len__(self) -> int:
        return len(self._queued) + len(self._delayed_due)


def slim(body: dict[str, Any], *, keep_spec: bool = True) -> dict[str, Any]:
    """What the cache keeps of an object: no managedFields (SSA bookkeeping, often the bulk of
    a body) and, for children (keep_spec=False), only metadata and status, which is all the
    controllers read of a Job or Deployment, plus who else edited them (see foreign_editors)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    if keep_spec:
        return {**body, "metadata": meta}
    editors = foreign_editors(body)
    if editors:
        meta[FOREIGN_EDITORS] = editors
    out = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": meta}
    if "status" in body:
        out["status"] = body["status"]
    return out


FOREIGN_EDITORS = "dockyard.dev/foreignEditors"  # cache-only key: never sent to the API


def foreign_editors(body: dict[str, Any]) -> list[str]:
    """Field managers other than ours that changed what we declare (anything but metadata and
    status) with an update: `kubectl edit`, `kubectl scale`, a patch. From managedFields, or
    from what slim() kept of them."""
    meta = body.get("metadata") or {}
    if FOREIGN_EDITORS in meta:
        return list(meta[FOREIGN_EDITORS])
    editors = set()
    for entry in meta.get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource") or entry.get("operation") != "Update":
            continue
        if any(key not in ("f:metadata", "f:status") for key in entry.get("fieldsV1") or {}):
            editors.add(str(entry.get("manager")))
    return sorted(editors)


@dataclass(frozen=True)
class Watched:
    """A kind the runtime caches: listed at start-up and on every resync, watched by kopf."""

    kind: str
    api_version: str
    label_selector: str | None = None
    keep_spec: bool = True  # children keep only metadata and status (see slim)


@dataclass
class _OwnWrite:
    """The body of ours the cache holds and the watch has not confirmed yet."""

    uid: str
    resource_version: str
    superseded: set[str]  # versions the cache held before it: any event carrying one is older
    at: float


class Cache:
    """Latest known body of every watched object, by (kind, namespace, name).

    resourceVersions are opaque, so events are never ordered by comparing them. What the
    cache must not do is step back over a body we wrote ourselves: a status patch returns the
    new body before the watch delivers the events of the versions it replaced. Those versions
    are the ones the cache held before the write, so an event carrying one of them is ignored.
    Any other version is ours or newer (kopf may coalesce events, so ours may never come).
    """

    # Past this age a write's bookkeeping is dropped: those stale events have long arrived.
    WRITTEN_GRACE = 30.0

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self._stamps: dict[Key, float] = {}  # when each key was last put (monotonic)
        self._written: dict[Key, _OwnWrite] = {}

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.objects.get(key)

    def put(self, key: Key, body: dict[str, Any]) -> None:
        self.objects[key] = body
        self._stamps[key] = time.monotonic()

    def put_written(self, key: Key, body: dict[str, Any]) -> None:
        """The body an API write of ours returned."""
        meta = body.get("metadata") or {}
        previous, pending = self.objects.get(key), self._written.get(key)
        superseded = set(pending.superseded) if pending and pending.uid == meta.get("uid") else set()
        if previous is not None:
            superseded.add(str((previous.get("metadata") or {}).get("resourceVersion")))
        self._written[key] = _OwnWrite(str(meta.get("uid")), str(meta.get("resourceVersion")), superseded,
                                       time.monotonic())
        self.put(key, body)

    def observe(self, key: Key, body: dict[str, Any], *, listed: bool = False) -> bool:
        """A watch event (``listed``: from a (re-)list); False when it is older than our own write."""
        pending = self._written.get(key)
        if pending is not None:
            meta = body.get("metadata") or {}
            fresh = time.monotonic() - pending.at < self.WRITTEN_GRACE
            if (fresh and not listed and meta.get("uid") == pending.uid
                    and meta.get("resourceVersion") in pending.superseded):
                return False
            if not fresh or listed or meta.get("uid") != pending.uid \
                    or meta.get("resourceVersion") == pending.resource_version:
                del self._written[key]
        self.put(key, body)
        return True

    def drop(self, key: Key) -> None:
        self.objects.pop(key, None)
        self._stamps.pop(key, None)
        self._written.pop(key, None)

    def by_kind(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [b for (k, ns, _), b in self.objects.items() if k == kind and (namespace is None or ns == namespace)]

    def replace(self, kind: str, namespaces: list[str], listed: dict[Key, dict[str, Any]], since: float) -> list[Key]:
        """Make the cache agree with a list of ``kind`` begun at ``since`` (monotonic), the way an
        informer's re-list does: add what is missing, drop what the list no longer has. A key
        put after the list began is newer than the list and stays. Returns the dropped keys."""
        for key, body in listed.items():
            if key not in self.objects:
                self.put(key, body)
        gone = [key for key in self.objects
                if key[0] == kind and (not namespaces or key[1] in namespaces)
                and key not in listed and self._stamps.get(key, 0.0) < since]
        for key in gone:
            self.drop(key)
        return gone


class EventRecorder:
    """Posts core/v1 Events on transitions and errors (reasons in CamelCase).

    Events are best effort, so they are posted in the background: a reconcile never waits on
    one (kopf's own posting works the same way).
    """

    MAX_IN_FLIGHT = 64

    def __init__(self, kube: KubeClient):
        self._kube = kube
        self._pending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.MAX_IN_FLIGHT)

    async def emit(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self._post_bounded(obj, type_, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Give queued Events a moment to be posted (on shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    async def _post_bounded(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        async with self._slots:
            await self.post(obj, type_, reason, message)

    async def post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
                "labels": {"app.kubernetes.io/managed-by": "dockyard-operator"},
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "dockyard-operator"},
            "reportingComponent": "dockyard-operator",
        }
        try:
            await self._kube.create(event)
        except ApiError as exc:  # events are best effort; never fail a reconcile for one
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)


@dataclass
class Context:
    """Everything a reconcile needs; built once per operator process."""

    kube: KubeClient
    mlflow: MlflowClient
    cfg: OperatorConfig
    cache: Cache
    queue: WorkQueue
    events: EventRecorder
    registry: WorkloadCredentials
    state: ControllerState = field(default_factory=ControllerState)


# -- status and children --------------------------------------------------------------

def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` status into `new`, or None when they are equal."""
    old = old or {}
    if old == new:
        return None
    return _merge_diff(old, new) or None


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    # A merge patch merges nested objects key by key, so a key gone from a nested object
    # (status.rollout.trafficSince) must be sent as null there, not only at the top level.
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value and key in old:
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            patch[key] = _merge_diff(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


async def write_status(ctx: Context, body: dict[str, Any], new_status: dict[str, Any]) -> dict[str, Any]:
    """Patch /status only if it changed; keep the cache in step with what we wrote."""
    patch = status_patch(body.get("status"), new_status)
    if patch is None:
        return body
    meta = body["metadata"]
    updated = await ctx.kube.merge_patch(
        body["apiVersion"], body["kind"], meta["namespace"], meta["name"], {"status": patch},
        subresource="status",
    )
    ctx.cache.put_written((body["kind"], meta["namespace"], meta["name"]), slim(updated))
    return updated


async def set_finalizer(ctx: Context, body: dict[str, Any], finalizer: str, *, present: bool) -> None:
    """Add or remove one finalizer (no write when it already is as wanted). The patch carries
    the resourceVersion, so a concurrent change to the list is a 409 and a retry, not a loss."""
    meta = body["metadata"]
    current = list(meta.get("finalizers") or [])
    if (finalizer in current) == present:
        return
    wanted = [*current, finalizer] if present else [f for f in current if f != finalizer]
    try:
        updated = await ctx.kube.merge_patch(
            body["apiVersion"], body["kind"], meta["namespace"], meta["name"],
            {"metadata": {"finalizers": wanted or None, "resourceVersion": meta["resourceVersion"]}},
        )
    except ApiError as exc:
        if exc.not_found and not present:
            return  # gone already
        raise
    body.update(updated)
    ctx.cache.put_written((body["kind"], meta["namespace"], meta["name"]), slim(updated))


def needs_apply(existing: dict[str, Any] | None, desired: dict[str, Any], applied: dict[str, str] | None = None) -> bool:
    """Whether a child must be (re-)applied: missing, our spec changed, or someone else changed
    it since we applied (drift: `kubectl edit`, `kubectl scale`). ``applied`` maps child uid ->
    the version marker our last apply returned; without one (after a restart), a child edited
    by another field manager counts as drifted."""
    if existing is None:
        return True
    have = (existing.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    want = desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    if have != want:
        return True
    known = (applied or {}).get(str(existing["metadata"].get("uid")))
    if known is not None:
        return known != version_marker(existing)
    return bool(foreign_editors(existing))


def version_marker(obj: dict[str, Any]) -> str:
    """What changes when someone changes the object: its generation where it has one (status
    updates do not move it), else its resourceVersion."""
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    return f"g{generation}" if generation is not None else f"rv{meta.get('resourceVersion')}"


async def ensure_child(ctx: Context, desired: dict[str, Any], existing: dict[str, Any] | None,
                       applied: dict[str, str]) -> dict[str, Any]:
    """Server-side apply a child when it is missing, its spec hash changed or it drifted; else no
    write. ``applied`` (the owner's, so it goes with the owner) maps child uid -> version marker."""
    if not needs_apply(existing, desired, applied):
        assert existing is not None
        applied.setdefault(str(existing["metadata"].get("uid")), version_marker(existing))
        return existing
    if existing is not None and foreign_editors(existing):
        log.info("%s %s/%s was changed by %s: re-applying", desired["kind"], desired["metadata"]["namespace"],
                 desired["metadata"]["name"], ", ".join(foreign_editors(existing)))
    try:
        result = await ctx.kube.apply(desired)
    except ApiError as exc:
        raise ChildRejected.check(desired, exc) from exc
    applied[str(result["metadata"].get("uid"))] = version_marker(result)
    return result


async def create_once(ctx: Context, desired: dict[str, Any]) -> dict[str, Any]:
    """Create an object that must exist exactly once (a Job); AlreadyExists means done."""
    try:
        return await ctx.kube.create(desired)
    except ApiError as exc:
        if exc.status == 409:
            meta = desired["metadata"]
            found = await ctx.kube.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
            if found is not None:
                return found
        raise ChildRejected.check(desired, exc) from exc


class ChildRejected(Exception):
    """The API refused a child we wrote: forbidden (RBAC, quota, admission), invalid. Waiting
    alone will not fix it, so it goes to the owner's status and an Event, and is retried with
    backoff (someone may raise the quota or grant the role)."""

    REFUSALS = frozenset({400, 403, 422})
    reason = "ChildRejected"

    def __init__(self, child: dict[str, Any], error: ApiError):
        self.kind = str(child.get("kind"))
        self.name = str(child["metadata"].get("name"))
        self.error = error
        super().__init__(f"{self.kind} {self.name} was refused ({error.status} {error.reason}): {error.message}")

    @classmethod
    def check(cls, child: dict[str, Any], error: ApiError) -> Exception:
        """The exception to raise for ``error``: ChildRejected for a refusal, else ``error``."""
        return cls(child, error) if error.status in cls.REFUSALS else error


async def report_rejection(ctx: Context, body: dict[str, Any], exc: ChildRejected | RegistryRefused) -> None:
    """Ready=False with the refusal's reason and message, and a Warning Event when it is new."""
    status = dict(body.get("status") or {})
    message = str(exc)[:1000]
    if status.get("message") == message:
        return  # already reported; the retry met the same refusal
    status["message"] = message
    status["conditions"] = summarize(status.get("conditions"), ready=False, reason=exc.reason, message=message,
                                     generation=generation(body))
    await write_status(ctx, body, status)
    await ctx.events.emit(body, "Warning", exc.reason, message)


def generation(body: dict[str, Any]) -> int:
    return int(body["metadata"].get("generation") or 1)


ReconcileFn = Callable[[Context, dict[str, Any]], Awaitable[Result]]
ForgetFn = Callable[[Context, dict[str, Any]], None]


class Runtime:
    """Runs the workers; controllers register one reconcile function per kind.

    Like an informer: no worker starts before every watched kind has been listed once (a
    TrainingRun must not be judged before its Dataset is known), and the lists are repeated
    every ``resync_seconds`` so that objects deleted while a watch was down (a 410 re-list
    sends no DELETED) leave the cache and the queue.
    """

    # MLflow failures back off at most this long; the MLflow watcher wakes waiters sooner.
    MLFLOW_MAX_BACKOFF = 30.0
    MLFLOW_PING_INTERVAL = 3.0

    def __init__(self, ctx: Context, *, namespaces: list[str] | None = None, resync_seconds: float = 300.0,
                 leading: asyncio.Event | None = None):
        self.ctx = ctx
        self.namespaces = list(namespaces or [])  # empty: cluster-wide
        self.resync_seconds = resync_seconds
        self.synced = asyncio.Event()
        # Set while this replica may reconcile (leader election); always, without one.
        self.leading = leading if leading is not None else asyncio.Event()
        if leading is None:
            self.leading.set()
        self._reconcilers: dict[str, ReconcileFn] = {}
        self._forgetters: dict[str, ForgetFn] = {}
        self._watched: list[Watched] = []
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._mlflow_waiters: set[Key] = set()

    def register(self, kind: str, fn: ReconcileFn, *, forget: ForgetFn | None = None) -> None:
        """``fn`` reconciles ``kind``; ``forget`` drops what the controller keeps for a deleted object."""
        self._reconcilers[kind] = fn
        if forget is not None:
            self._forgetters[kind] = forget

    def watch(self, watched: Watched) -> None:
        self._watched.append(watched)

    def observe(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """Feed a watch event: update the cache, enqueue the key (or forget it on delete)."""
        meta = body.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._deleted(key, body)
            return
        # kopf marks the events of a (re-)list with type None.
        if self.ctx.cache.observe(key, slim(body), listed=event_type is None) and kind in self._reconcilers:
            self.ctx.queue.add(key)

    def _deleted(self, key: Key, body: dict[str, Any] | None) -> None:
        self.ctx.cache.drop(key)
        self.ctx.queue.forget(key)
        self._failures.pop(key, None)
        self._mlflow_waiters.discard(key)
        forget = self._forgetters.get(key[0])
        if forget is not None and body is not None:
            forget(self.ctx, body)
        if key[0] in self._reconcilers:
            metrics.PHASES.observe(key[0], f"{key[1]}/{key[2]}", None)

    def observe_child(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """A child (Job, Deployment) changed: cache what the controllers read of it, wake its owner."""
        meta = body.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.ctx.cache.drop(key)
        else:
            self.ctx.cache.observe(key, slim(body, keep_spec=False), listed=event_type is None)
        self.enqueue_owner(body)

    def enqueue_owner(self, child: dict[str, Any]) -> None:
        """A child changed: reconcile its Dockyard controller owner."""
        meta = child.get("metadata", {})
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") in self._reconcilers:
                self.ctx.queue.add((ref["kind"], meta.get("namespace", ""), ref["name"]))

    async def sync(self) -> None:
        """List every watched kind and make the cache agree (see :meth:`Cache.replace`)."""
        scopes: list[str | None] = [*self.namespaces] or [None]
        for w in self._watched:
            since = time.monotonic()
            listed: dict[Key, dict[str, Any]] = {}
            for ns in scopes:
                for body in await self.ctx.kube.list(w.api_version, w.kind, ns, label_selector=w.label_selector):
                    meta = body["metadata"]
                    body = {"apiVersion": w.api_version, "kind": w.kind, **body}  # list items lack them
                    listed[(w.kind, meta["namespace"], meta["name"])] = slim(body, keep_spec=w.keep_spec)
            for key in self.ctx.cache.replace(w.kind, self.namespaces, listed, since):
                log.info("%s %s/%s is gone (missed while a watch was down)", *key)
                self._deleted(key, None)
            if w.kind in self._reconcilers:
                for key in listed:
                    self.ctx.queue.add(key)

    async def start(self, workers: int) -> None:
        self._tasks.append(asyncio.create_task(self.ctx.queue.run_timer(), name="dockyard-timer"))
        self._tasks.append(asyncio.create_task(self._watch_mlflow(), name="dockyard-mlflow-watch"))
        self._tasks.append(asyncio.create_task(self._resync_forever(), name="dockyard-resync"))
        for i in range(workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"dockyard-worker-{i}"))

    async def stop(self) -> None:
        await self.ctx.events.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _resync_forever(self) -> None:
        delay = 1.0
        while not self.synced.is_set():  # the first sync gates the workers: retry until it lands
            try:
                await self.sync()
            except Exception as exc:  # API or connection errors alike: nothing runs until it lands
                log.warning("initial list failed: %s; retry in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.synced.set()
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("resync failed: %s", exc)

    async def _worker(self) -> None:
        await self.synced.wait()
        while True:
            await self.leading.wait()
            key = await self.ctx.queue.get()
            try:
                await self._process(key)
            finally:
                self.ctx.queue.done(key)

    async def _process(self, key: Key) -> None:
        kind = key[0]
        body = self.ctx.cache.get(key)
        if body is None:
            return
        start = time.perf_counter()
        try:
            result = await self._reconcilers[kind](self.ctx, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(0.5 * (2 ** (failures - 1)), 300.0)
            if isinstance(exc, ChildRejected | RegistryRefused):
                await self._report(key, exc)
            if isinstance(exc, MlflowWaitError):
                # Waiting on MLflow: retry at most every 30 s, and at once when it answers again.
                delay = min(delay, self.MLFLOW_MAX_BACKOFF)
                self._mlflow_waiters.add(key)
            level = (logging.WARNING if isinstance(exc, ApiError | TransientError | ChildRejected | RegistryRefused)
                     else logging.ERROR)
            log.log(level, "reconcile %s/%s/%s failed (%d): %s; retry in %.1fs", *key, failures, exc, delay,
                    exc_info=level == logging.ERROR)
            metrics.RECONCILE_TOTAL.labels(kind=kind, result="error").inc()
            self.ctx.queue.add_after(key, delay)
            return
        finally:
            metrics.RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - start)
        self._failures.pop(key, None)
        self._mlflow_waiters.discard(key)
        metrics.RECONCILE_TOTAL.labels(kind=kind, result="success").inc()
        latest = self.ctx.cache.get(key)
        if latest is not None:
            metrics.PHASES.observe(kind, f"{key[1]}/{key[2]}", (latest.get("status") or {}).get("phase"))
        if result.requeue_after is not None:
            self.ctx.queue.add_after(key, result.requeue_after)
        else:
            self.ctx.queue.forget(key)  # a timer left from an earlier pass would be a no-op reconcile


    async def _report(self, key: Key, exc: ChildRejected | RegistryRefused) -> None:
        body = self.ctx.cache.get(key)
        if body is None:
            return
        try:
            await report_rejection(self.ctx, body, exc)
        except ApiError as err:  # e.g. status writes refused too: the log is all that is left
            log.warning("could not report %s on %s/%s/%s: %s", exc, *key, err)

    async def _watch_mlflow(self) -> None:
        """While something waits on MLflow, ping it; when it answers, wake the waiters.

        Costs nothing in steady state: it only pings while a reconcile failed on MLflow.
        """
        while True:
            await asyncio.sleep(self.MLFLOW_PING_INTERVAL)
            if not self._mlflow_waiters:
                continue
            if await self.ctx.mlflow.ping():
                waiters, self._mlflow_waiters = self._mlflow_waiters, set()
                log.info("MLflow is reachable again; resuming %d object(s)", len(waiters))
                for key in waiters:
                    self.ctx.queue.add(key)


class TransientError(Exception):
    """A known, retryable condition (already reported in status); logged without a traceback."""


class MlflowWaitError(TransientError):
    """Retryable because MLflow is unreachable; the runtime resumes it when MLflow answers."""

