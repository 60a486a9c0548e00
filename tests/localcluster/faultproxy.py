"""A fault-injecting proxy in front of a real kube-apiserver.

Clients (the operator under test) talk plain HTTP to the proxy on loopback; the proxy forwards
every request over TLS to the apiserver with the client's own ``Authorization`` header, so
authentication and RBAC stay the apiserver's. On the way it can:

* fail the next N matching requests with a Kubernetes ``Status`` (500, 429 with
  ``Retry-After``, 409, ...), before they reach the apiserver;
* delay matching requests;
* drop every open watch stream (clients see the stream end mid-way and must re-watch);
* expire watch history: every open watch gets the apiserver's ``410 Gone`` ERROR event
  (``Expired``) and ends, and the next watch of each resource is answered the same way, so
  clients must re-list, as after real etcd compaction;

and it counts requests by (verb, resource) as :class:`~tests.localcluster.faults.Counters`.
The fault and counter objects are the same classes the API emulator uses, so tests written
for one run against the other.

With ``client_cert=(cert_path, key_path)`` the proxy presents that client certificate on its
TLS connections to the apiserver, so requests that carry no ``Authorization`` header are made
as the certificate's identity (the benchmarks give their own plain-HTTP client the admin
identity this way). The apiserver tries client certificates before bearer tokens, so a proxy
with a certificate must not carry a client that should act as someone else (an operator with
its ServiceAccount token needs a proxy of its own, without one).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .faults import Counters, Faults

_HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "content-length",
                "upgrade", "proxy-connection", "te", "trailer"}
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}
_RESOURCE = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def status_body(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": _REASONS.get(code, "InternalError"), "code": code}


def verb_resource(method: str, path: str, watch: bool) -> tuple[str, str] | None:
    m = _RESOURCE.match(path)
    if m is None:
        return None
    plural, name, sub = m["plural"], m["name"], m["sub"]
    if plural == "namespaces" and name and sub and not m["ns"]:
        # /api/v1/namespaces/<ns>/<plural>: the regex reads it as a namespace subresource
        return None
    resource = plural + (f"/{sub}" if sub else "")
    if method == "GET":
        verb = "watch" if watch else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
        if verb is None:
            verb = ("delete" if name else "deletecollection") if method == "DELETE" else method.lower()
    return verb, resource


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        ca_file: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_cert: tuple[str | Path, str | Path] | None = None,
        thread_name: str = "fault-proxy",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = str(ca_file)
        self.client_cert = (str(client_cert[0]), str(client_cert[1])) if client_cert else None
        self.thread_name = thread_name
        self.host, self.port = host, port
        self.faults = Faults()
        self.counters = Counters()
        self._watches: set[web.StreamResponse] = set()
        self._expired: set[str] = set()  # resource paths whose next watch gets 410
        self._expire_all = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.faults._register(self._drop_watches_threadsafe, self._expire_threadsafe)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------ lifecycle (own thread)

    def start(self) -> FaultProxy:
        self._ssl = self._ssl_context()  # here, so a bad CA or client certificate raises in the caller
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.check_hostname = False
        if self.client_cert is not None:
            ctx.load_cert_chain(*self.client_cert)
        return ctx

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=200), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        for w in list(self._watches):
            await _close(w)
        await runner.cleanup()
        await self._session.close()

    # ------------------------------------------------------------ faults

    def _drop_watches_threadsafe(self) -> None:
        if self._loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._drop_watches(), self._loop)
            fut.result(10)

    async def _drop_watches(self) -> None:
        for w in list(self._watches):
            self._watches.discard(w)
            await _close(w)

    def _expire_threadsafe(self) -> None:
        if self._loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._expire(), self._loop)
            fut.result(10)

    async def _expire(self) -> None:
        self._expire_all = True
        event = json.dumps({"type": "ERROR", "object": status_body(
            410, "too old resource version: the watch history was compacted (fault proxy)")}).encode() + b"\n"
        for w in list(self._watches):
            self._watches.discard(w)
            try:
                await w.write(event)
            except (ConnectionError, RuntimeError):
                pass
            await _close(w)

    # ------------------------------------------------------------ forwarding

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path_qs = request.path_qs
        watch = request.query.get("watch") in ("1", "true")
        vr = verb_resource(request.method, request.path, watch)
        if vr is not None:
            self.counters.inc(*vr)
        # Faults match the resource path, not the query (fieldManager, watch, ...).
        delay = self.faults.latency(request.method, request.path)
        if delay:
            await asyncio.sleep(delay)
        failure = self.faults.take_failure(request.method, request.path)
        if failure is not None:
            code, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.json_response(status_body(code, f"injected by the fault proxy ({code})"),
                                     status=code, headers=headers)
        if watch and self._expire_all and request.query.get("resourceVersion") not in (None, "", "0"):
            if request.path not in self._expired:
                self._expired.add(request.path)
                resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
                await resp.prepare(request)
                await resp.write(json.dumps({"type": "ERROR", "object": status_body(
                    410, "too old resource version (fault proxy)")}).encode() + b"\n")
                await resp.write_eof()
                return resp
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read() if request.can_read_body else None
        try:
            upstream = await self._session.request(
                request.method, self.upstream + path_qs, headers=headers, data=body,
                timeout=aiohttp.ClientTimeout(total=None if watch else 120, sock_read=None if watch else 120),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as e:
            return web.json_response(status_body(503, f"fault proxy: apiserver unreachable: {e}"), status=503)
        async with upstream:
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            if not watch:
                data = await upstream.read()
                return web.Response(status=upstream.status, body=data, headers=out_headers)
            resp = web.StreamResponse(status=upstream.status, headers=out_headers)
            await resp.prepare(request)
            self._watches.add(resp)
            try:
                async for chunk in upstream.content.iter_any():
                    if resp not in self._watches:
                        break
                    await resp.write(chunk)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                pass
            finally:
                self._watches.discard(resp)
            return resp


async def _close(resp: web.StreamResponse) -> None:
    """End a streaming response abruptly, as a dropped connection would."""
    transport = resp._req.transport if resp._req is not None else None  # type: ignore[attr-defined]
    if transport is not None:
        transport.close()
