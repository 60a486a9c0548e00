"""Object storage with a global resourceVersion counter and a bounded event history for watches.

Thread-safe: every operation takes ``Store.lock`` (an ``RLock``; the API layer holds it across a
read-modify-write). Watch subscribers live on an asyncio loop and receive events through
``loop.call_soon_threadsafe`` in resourceVersion order.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

_List = list  # the classes below have a method named `list`


class Gone(Exception):
    """The requested resourceVersion is older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


@dataclass
class Event:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    key: Key
    obj: dict[str, Any]
    prev: dict[str, Any] | None = None  # the previous state (MODIFIED), for selector transitions


@dataclass(eq=False)
class Subscriber:
    key: Key
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def deliver(self, ev: Event | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ev)
        except RuntimeError:  # loop closed
            pass


class Store:
    def __init__(self, history_limit: int = 1000) -> None:
        self.lock = threading.RLock()
        self.history_limit = history_limit
        self._rv = 0
        self._objects: dict[Key, dict[ObjKey, dict[str, Any]]] = collections.defaultdict(dict)
        self._uids: dict[str, tuple[Key, ObjKey]] = {}
        self._history: collections.deque[Event] = collections.deque()
        self.compacted_rv = 0  # a watch may start at any rv >= compacted_rv
        self._subscribers: set[Subscriber] = set()

    # -- resourceVersion ------------------------------------------------------------------
    @property
    def current_rv(self) -> int:
        with self.lock:
            return self._rv

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # -- reads ----------------------------------------------------------------------------
    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self._objects[key].get((namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, key: Key, namespace: str | None = None, match: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Objects of a type (in ``namespace`` or everywhere when None), sorted, and the current rv.

        ``match`` filters before copying: a selector list must not deep-copy the whole namespace.
        """
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self._objects[key].items())
                if (namespace is None or ns == namespace) and (match is None or match(o))
            ]
            return items, self._rv

    def peek_all(self, key: Key) -> _List[dict[str, Any]]:
        """The stored objects themselves, no copies: read-only, and only while holding ``lock``."""
        with self.lock:
            return list(self._objects[key].values())

    def keys(self) -> _List[Key]:
        with self.lock:
            return [k for k, v in self._objects.items() if v]

    def by_uid(self, uid: str) -> tuple[Key, dict[str, Any]] | None:
        with self.lock:
            loc = self._uids.get(uid)
            if loc is None:
                return None
            obj = self._objects[loc[0]].get(loc[1])
            return (loc[0], copy.deepcopy(obj)) if obj is not None else None

    def uid_exists(self, uid: str) -> bool:
        with self.lock:
            return uid in self._uids

    def dependents_of(self, uid: str) -> _List[tuple[Key, dict[str, Any]]]:
        with self.lock:
            out = []
            for key, objs in self._objects.items():
                for o in objs.values():
                    for ref in o.get("metadata", {}).get("ownerReferences") or []:
                        if ref.get("uid") == uid:
                            out.append((key, copy.deepcopy(o)))
                            break
            return out

    # -- writes ---------------------------------------------------------------------------
    def put(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (created or modified) with a new resourceVersion; returns a copy."""
        with self.lock:
            meta = obj["metadata"]
            okey = (meta.get("namespace") or "", meta["name"])
            prev = self._objects[key].get(okey)
            etype = "MODIFIED" if prev is not None else "ADDED"
            meta["resourceVersion"] = str(self._next_rv())
            stored = copy.deepcopy(obj)
            self._objects[key][okey] = stored
            if meta.get("uid"):
                self._uids[meta["uid"]] = (key, okey)
            self._record(Event(self._rv, etype, key, stored, prev))
            return copy.deepcopy(stored)

    def remove(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            okey = (namespace or "", name)
            obj = self._objects[key].pop(okey, None)
            if obj is None:
                return None
            uid = obj.get("metadata", {}).get("uid")
            if uid:
                self._uids.pop(uid, None)
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._next_rv())
            self._record(Event(self._rv, "DELETED", key, obj))
            return copy.deepcopy(obj)

    def _record(self, ev: Event) -> None:
        self._history.append(ev)
        while len(self._history) > self.history_limit:
            old = self._history.popleft()
            self.compacted_rv = max(self.compacted_rv, old.rv)
        for sub in list(self._subscribers):
            if sub.key == ev.key:
                sub.deliver(ev)

    # -- watch ----------------------------------------------------------------------------
    def subscribe(
        self, key: Key, loop: asyncio.AbstractEventLoop, since_rv: int | None
    ) -> tuple[Subscriber, _List[Event]]:
        """Register a subscriber and return the retained events with rv > ``since_rv``.

        Raises :class:`Gone` if ``since_rv`` is older than the retained history.
        """
        with self.lock:
            backlog: _List[Event] = []
            if since_rv is not None:
                if since_rv < self.compacted_rv:
                    raise Gone(since_rv, self.compacted_rv + 1)
                backlog = [ev for ev in self._history if ev.rv > since_rv and ev.key == key]
            sub = Subscriber(key, loop)
            self._subscribers.add(sub)
            return sub, backlog

    def request_bookmark(self, sub: Subscriber) -> None:
        """Queue a BOOKMARK at the current resourceVersion behind any event already queued."""
        with self.lock:
            sub.deliver(Event(self._rv, "BOOKMARK", sub.key, {}))

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.lock:
            self._subscribers.discard(sub)

    def close_all_watches(self) -> int:
        with self.lock:
            subs = list(self._subscribers)
            self._subscribers.clear()
        for s in subs:
            s.deliver(None)
        return len(subs)

    def expire_history(self) -> None:
        """Forget all history: watches from any resourceVersion older than now get 410 Gone."""
        with self.lock:
            self._history.clear()
            self.compacted_rv = self._rv

    def check_rv(self, rv: int) -> None:
        with self.lock:
            if rv < self.compacted_rv:
                raise Gone(rv, self.compacted_rv + 1)
