"""A small asyncio Kubernetes client for the node agent and the fault proxy's tests.

It reads a kubeconfig with client-certificate or token credentials (what the local cluster
hands out), retries 429/5xx and connection errors with backoff (honouring Retry-After), and
watches with resume from the last resourceVersion and a re-list on 410 Gone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.retry_after: float | None = None
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {msg}")

    @property
    def message(self) -> str:
        return str(self.body.get("message") if isinstance(self.body, dict) else self.body)


@dataclass
class Endpoint:
    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | bool = False


def endpoint_from_kubeconfig(path: Path | str) -> Endpoint:
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    contexts = {c["name"]: c.get("context") or {} for c in cfg.get("contexts") or []}
    ctx = contexts.get(cfg.get("current-context")) or next(iter(contexts.values()), {})
    clusters = {c["name"]: c.get("cluster") or {} for c in cfg.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in cfg.get("users") or []}
    cluster = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()))
    user = users.get(ctx.get("user")) or {}
    ep = Endpoint(server=cluster["server"].rstrip("/"))

    def material(obj: Obj, data_key: str, file_key: str) -> str | None:
        if obj.get(data_key):
            tmp = tempfile.NamedTemporaryFile(delete=False, prefix="kcfg-", suffix=".pem")  # noqa: SIM115
            tmp.write(base64.b64decode(obj[data_key]))
            tmp.close()
            return tmp.name
        return str(Path(path).parent / obj[file_key]) if obj.get(file_key) else None

    if ep.server.startswith("https"):
        ctx_ssl = ssl.create_default_context(
            cafile=material(cluster, "certificate-authority-data", "certificate-authority")
        )
        cert = material(user, "client-certificate-data", "client-certificate")
        key = material(user, "client-key-data", "client-key")
        if cert and key:
            ctx_ssl.load_cert_chain(cert, key)
        ep.ssl = ctx_ssl
    if user.get("token"):
        ep.headers["Authorization"] = f"Bearer {user['token']}"
    return ep


class Api:
    def __init__(self, ep: Endpoint, *, user_agent: str = "dockyard-node-agent") -> None:
        self.ep = ep
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path | str, **kw: Any) -> Api:
        return cls(endpoint_from_kubeconfig(path), **kw)

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={**self.ep.headers, "User-Agent": self.user_agent},
                connector=aiohttp.TCPConnector(ssl=self.ep.ssl, limit=50),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        retries: int = 8,
    ) -> Obj | None:
        """One request with retries on 429/5xx and connection errors; None on 404."""
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                return await self._once(method, path, body, query, content_type)
            except ApiError as e:
                if e.status == 404:
                    return None
                if e.status not in (429, 500, 502, 503, 504) or attempt == retries:
                    raise
                wait = e.retry_after if e.retry_after is not None else delay
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                if attempt == retries:
                    raise
                log.debug("%s %s: %s (retrying)", method, path, e)
                wait = delay
            await asyncio.sleep(wait * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, body: Any, query: dict[str, Any] | None,
                    content_type: str) -> Obj:
        assert self._session is not None, "open() first"
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        async with self._session.request(
            method, self.ep.server + path, data=data, params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            text = await resp.text()
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:
                payload = text
            if resp.status >= 400:
                err = ApiError(resp.status, payload, method, path)
                if resp.headers.get("Retry-After", "").isdigit():
                    err.retry_after = float(resp.headers["Retry-After"])
                raise err
            return payload if isinstance(payload, dict) else {}

    async def get(self, path: str) -> Obj | None:
        return await self.request("GET", path)

    async def merge_patch(self, path: str, patch: Obj) -> Obj | None:
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def list_all(self, path: str, query: dict[str, Any] | None = None) -> tuple[list[Obj], str]:
        """Every item (paginated) and the list's resourceVersion."""
        items: list[Obj] = []
        cont: str | None = None
        while True:
            lst = await self.request("GET", path, query={**(query or {}), "limit": 500, "continue": cont}) or {}
            items += lst.get("items") or []
            cont = (lst.get("metadata") or {}).get("continue")
            if not cont:
                return items, str((lst.get("metadata") or {}).get("resourceVersion", ""))

    async def informer(
        self, path: str, query: dict[str, Any] | None = None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """("SYNC", obj) for each object of every (re-)list, then watch events forever.
        After a 410 the consumer sees a fresh SYNC round followed by ("RESYNCED", {}), so it
        can drop what the new list did not contain."""
        while True:
            try:
                items, rv = await self.list_all(path, query)
            except (ApiError, aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                log.warning("list %s: %s", path, e)
                await asyncio.sleep(1)
                continue
            for obj in items:
                yield "SYNC", obj
            yield "RESYNCED", {"items": items}
            while True:
                try:
                    async for etype, obj in self._watch(path, rv, query):
                        if etype == "BOOKMARK" or etype == "ERROR":
                            if etype == "ERROR" and obj.get("code") == 410:
                                raise _Gone
                            rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                            continue
                        rv = obj["metadata"]["resourceVersion"]
                        yield etype, obj
                except _Gone:
                    break
                except (ApiError, aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as e:
                    if isinstance(e, ApiError) and e.status == 410:
                        break
                    log.debug("watch %s: %s (resuming)", path, e)
                    await asyncio.sleep(0.5)

    async def _watch(self, path: str, rv: str, query: dict[str, Any] | None) -> AsyncIterator[tuple[str, Obj]]:
        assert self._session is not None
        params = {**{k: str(v) for k, v in (query or {}).items() if v is not None},
                  "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
        async with self._session.get(
            self.ep.server + path, params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=330)
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text(), "WATCH", path)
            async for line in resp.content:
                if line.strip():
                    ev = json.loads(line)
                    yield ev["type"], ev["object"]


class _Gone(Exception):
    pass
