"""Fault injection and request counters. Both are thread-safe (tests poke them from other threads)."""

from __future__ import annotations

import collections
import re
import threading
from dataclasses import dataclass
from typing import Any

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    retry_after: int | None


@dataclass
class _Latency:
    seconds: float
    method: str | None
    pattern: re.Pattern[str] | None


class Faults:
    """Fault injection.

    ``method`` is an HTTP method (``GET``, ``PATCH``, ...; case-insensitive) or ``"*"``;
    ``path_regex`` is searched (``re.search``) in the request path *with* its query string, e.g.
    ``r"/trainingruns/[^/]+/status"`` or ``r"watch=true"``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._latencies: list[_Latency] = []
        self._drop_hooks: list[Any] = []
        self._expire_hooks: list[Any] = []

    def fail_next(
        self, method: str, path_regex: str, status: int, count: int = 1, retry_after: int | None = None
    ) -> None:
        """Make the next ``count`` matching requests fail with ``status`` (a Kubernetes Status body;
        429/503 carry ``Retry-After`` when ``retry_after`` is given)."""
        with self._lock:
            self._failures.append(
                _Failure(method.upper(), re.compile(path_regex), status, count, retry_after)
            )

    def add_latency(self, seconds: float, method: str | None = None, path_regex: str | None = None) -> None:
        """Delay matching requests (all when no filter) by ``seconds`` before handling them."""
        with self._lock:
            self._latencies.append(
                _Latency(
                    seconds,
                    method.upper() if method else None,
                    re.compile(path_regex) if path_regex else None,
                )
            )

    def drop_watches(self) -> None:
        """Close every open watch stream now (clients see the stream end and must re-watch)."""
        for hook in list(self._drop_hooks):
            hook()

    def expire_history(self) -> None:
        """Forget the watch history: watches (and resumes) from any older resourceVersion get 410."""
        for hook in list(self._expire_hooks):
            hook()

    def clear(self) -> None:
        """Remove pending failures and latencies."""
        with self._lock:
            self._failures.clear()
            self._latencies.clear()

    # -- used by the server ---------------------------------------------------------------
    def _register(self, drop: Any, expire: Any) -> None:
        self._drop_hooks.append(drop)
        self._expire_hooks.append(expire)

    def take_failure(self, method: str, path_qs: str) -> tuple[int, int | None] | None:
        with self._lock:
            for f in self._failures:
                if f.remaining > 0 and f.method in ("*", method.upper()) and f.pattern.search(path_qs):
                    f.remaining -= 1
                    if f.remaining == 0:
                        self._failures.remove(f)
                    return f.status, f.retry_after
        return None

    def latency(self, method: str, path_qs: str) -> float:
        with self._lock:
            return sum(
                lat.seconds
                for lat in self._latencies
                if (lat.method is None or lat.method == method.upper())
                and (lat.pattern is None or lat.pattern.search(path_qs))
            )


class Counters:
    """Requests counted by (verb, resource): verb in get/list/watch/create/update/patch/delete/
    deletecollection, resource the plural with an optional subresource (``trainingruns/status``).
    Requests failed by fault injection are counted too (the client did send them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def inc(self, verb: str, resource: str) -> None:
        with self._lock:
            self._counts[(verb, resource)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def writes(self, since: dict[tuple[str, str], int] | None = None) -> dict[tuple[str, str], int]:
        """Write requests (create/update/patch/delete) since a :meth:`snapshot` (or ever)."""
        since = since or {}
        with self._lock:
            out = {}
            for k, v in self._counts.items():
                if k[0] in WRITE_VERBS and v - since.get(k, 0) > 0:
                    out[k] = v - since.get(k, 0)
            return out

    def get(self, verb: str, resource: str) -> int:
        with self._lock:
            return self._counts.get((verb, resource), 0)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
