"""A counting, fault-injecting reverse proxy in front of the real MLflow server.

The operator is pointed at the proxy; the proxy forwards every request unchanged to the real
server. Tests and benchmarks use it to count MLflow calls by endpoint (steady state must make
none) and to fail chosen endpoints (e.g. the alias call that follows a registration), which
pins a crash or an outage to an exact step.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int


class MlflowProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test-facing API (thread-safe) -----------------------------------------------
    def fail(self, method: str, path_regex: str, status: int = 503, count: int = 1) -> None:
        with self._lock:
            self._rules.append(Rule(method.upper(), re.compile(path_regex), status, count))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)

    def calls_since(self, before: Counter[str]) -> dict[str, int]:
        now = self.snapshot()
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> MlflowProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="mlflow-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("MLflow proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    async def _start(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def _stop(self) -> None:
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        key = f"{request.method} {re.sub(r'^/api/2\.0/mlflow/', '', path)}"
        with self._lock:
            self.calls[key] += 1
            rule = next(
                (
                    r
                    for r in self._rules
                    if r.remaining > 0 and r.method == request.method and r.path.search(path)
                ),
                None,
            )
            if rule is not None:
                rule.remaining -= 1
        if rule is not None:
            return web.json_response(
                {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}, status=rule.status
            )
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                out_headers = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower()
                    not in ("content-length", "transfer-encoding", "content-encoding", "connection")
                }
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except aiohttp.ClientError as exc:
            return web.json_response({"error_code": "BAD_GATEWAY", "message": str(exc)}, status=502)
