"""Shadow variants in the builtin router, with real nginx in front of tiny local backends.

Fast (no models): the shadow backends count what they receive themselves. What is checked:
the mirrored share, that a copy is the same request (method, path, query, body), that no
client ever gets a shadow's response (even when it asks for the shadow by the force header),
and that a shadow that fails (500s, a refused connection, a connection attempt nobody answers)
or is slow changes nothing for clients, not even for their next request on the same keep-alive
connection. The same on the real control plane, with MLServer: ``test_traffic.py``.
"""

from __future__ import annotations

import http.server
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.routers import builtin
from tests.serving.nginx_process import NGINX, NginxRouter

pytestmark = [pytest.mark.serving, pytest.mark.skipif(NGINX is None, reason="nginx binary not installed")]

SHARE = 30  # percent mirrored to the erroring shadow
SLOW_SECONDS = 4.0


@dataclass
class Backend:
    """A local HTTP server that records every request it gets; ``status``/``delay`` shape its replies."""

    name: str
    status: int = 200
    delay: float = 0.0
    requests: list[tuple[str, str, bytes, str | None]] = field(default_factory=list)
    # Per reply: was the sender still connected when the answer went out (it waited for it)?
    replies: list[bool] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> str:
        """``host:port``, starting the server on first use."""
        if self.server is not None:
            return f"127.0.0.1:{self.server.server_address[1]}"
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536

            def _reply(self) -> None:
                body_in = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with backend.lock:
                    backend.requests.append((self.command, self.path, body_in, self.headers.get("X-Dockyard-Shadow")))
                if backend.delay:
                    time.sleep(backend.delay)  # the backend's own latency, not a wait in the test
                readable, _, _ = select.select([self.connection], [], [], 0)
                hung_up = bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                with backend.lock:
                    backend.replies.append(not hung_up)
                body = json.dumps({"backend": backend.name}).encode()
                self.send_response(backend.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Dockyard-Variant", backend.name)  # spoof attempt: dropped by the router
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def closed_port() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def unanswered() -> Iterator[str]:
    """``host:port`` whose connection attempts go unanswered (as a Service without ready
    endpoints behaves on some proxies): a listener with a backlog of 0 whose one queue slot is
    taken, so the kernel drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        addr = listener.getsockname()
        filler = socket.create_connection(addr)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            with pytest.raises(TimeoutError):
                probe.connect(addr)
            yield f"{addr[0]}:{addr[1]}"
        finally:
            probe.close()
            filler.close()


def router_for(
    variants: list[dict[str, object]], upstreams: dict[str, str], workdir: Path, **router: object
) -> NginxRouter:
    spec = ModelDeploymentSpec.model_validate({"modelName": "echo", "variants": variants, "router": router})
    versions = {str(v["name"]): str(v["version"]) for v in variants}
    return NginxRouter(spec, upstreams, versions, workdir)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    out = {"live": Backend("live"), "broken": Backend("broken", status=500), "slow": Backend("slow", delay=SLOW_SECONDS)}
    yield out
    for b in out.values():
        b.stop()


@pytest.fixture(scope="module")
def shadowed(backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRouter]:
    """live takes every request; ``broken`` (answers 500) gets SHARE %, ``gone`` (connection
    refused) gets every request mirrored."""
    ups = {"live": backends["live"].start(), "broken": backends["broken"].start(), "gone": closed_port()}
    r = router_for([
        {"name": "live", "version": "1"},
        {"name": "broken", "version": "2", "weight": 100, "shadow": SHARE},
        {"name": "gone", "version": "3", "shadow": 100},
    ], ups, tmp_path_factory.mktemp("nginx-shadow"), allowVariantForcing=True)  # a forced shadow name is ignored
    yield r
    r.stop()


_local = threading.local()


def post(router: NginxRouter, i: int, **headers: str) -> requests.Response:
    if not hasattr(_local, "s"):
        _local.s = requests.Session()
    return _local.s.post(f"{router.url}/v2/models/echo/infer?i={i}", json={"i": i}, headers=headers, timeout=10)


def wait_until(check: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.05)


def test_shadow_gets_its_share_and_clients_never_see_it(shadowed: NginxRouter, backends: dict[str, Backend]) -> None:
    live, broken = backends["live"], backends["broken"]
    live_before, broken_before = live.count(), broken.count()
    n = 1000
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: post(shadowed, i), range(n)))
    # The broken shadow answered 500 and the gone one refused every connection: clients saw
    # only the live variant's answers.
    assert {r.status_code for r in replies} == {200}
    assert {r.json()["backend"] for r in replies} == {"live"}
    assert {r.headers["X-Dockyard-Variant"] for r in replies} == {"live"}
    assert live.count() - live_before == n
    # 30 % of 1000: sd 1.45 points; +-6 points is 4 sd. Mirrors still in flight only add.
    low, high = n * (SHARE - 6) // 100, n * (SHARE + 6) // 100
    # Copies are relayed in the background: on loaded cores they trail the replies by seconds.
    wait_until(lambda: broken.count() - broken_before >= low, 60, f"at least {low} mirrored requests")
    assert broken.count() - broken_before <= high, broken.count() - broken_before
    # A copy is the same request, marked for the shadow's logs.
    method, path, body, marker = broken.requests[-1]
    i = json.loads(body)["i"]
    assert (method, path, marker) == ("POST", f"/v2/models/echo/infer?i={i}", "broken")


def test_force_header_cannot_reach_a_shadow(shadowed: NginxRouter) -> None:
    for i in range(20):
        r = post(shadowed, i, **{"X-Dockyard-Variant": "broken"})
        assert r.status_code == 200 and r.json()["backend"] == "live"
        assert r.headers["X-Dockyard-Variant"] == "live" and r.headers["X-Dockyard-Model-Version"] == "1"


def test_internal_mirror_location_is_not_reachable_by_clients(shadowed: NginxRouter) -> None:
    assert requests.get(f"{shadowed.url}/_dockyard/mirror/broken", timeout=5).status_code == 404


def test_slow_or_unreachable_shadow_never_holds_a_client(
    backends: dict[str, Backend], unanswered: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """nginx reads the next request on a client's keep-alive connection only once the mirror
    subrequests of the previous one are done. With a shadow that takes SLOW_SECONDS and one that
    never answers a SYN (1 s connect timeout), each request on one connection must still be
    quick: the copies go through the relay, which answers at once. The slow shadow still gets
    every copy, and answers each to a relay that waited for the answer."""
    slow = backends["slow"]
    ups = {"live": backends["live"].start(), "slow": slow.start(), "hole": unanswered}
    router = router_for([{"name": "live", "version": "1"}, {"name": "slow", "version": "2", "shadow": 100},
                         {"name": "hole", "version": "3", "shadow": 100}],
                        ups, tmp_path_factory.mktemp("nginx-slow-shadow"))
    n = 5
    try:
        with requests.Session() as s:
            for i in range(n):
                started = time.monotonic()
                r = s.post(f"{router.url}/v2/models/echo/infer", json={"i": i}, timeout=30)
                elapsed = time.monotonic() - started
                assert r.status_code == 200 and r.json()["backend"] == "live"
                # Held by a mirror, request i > 0 would take SLOW_SECONDS (or the 1 s connect timeout).
                assert elapsed < 0.8, (i, elapsed)
        wait_until(lambda: len(slow.replies) == n, SLOW_SECONDS + 15, f"the slow shadow answering its {n} copies")
        assert slow.replies == [True] * n, "the relay hung up before the shadow answered"
        assert sorted(json.loads(body)["i"] for _, _, body, _ in slow.requests) == list(range(n))
    finally:
        router.stop()


def test_relay_caps_the_copies_in_flight(
    backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies waiting on a shadow hold relay connections, which share worker_connections with
    clients; beyond the cap the relay refuses a copy at once. With a cap of 2 and a shadow
    slower than the whole exchange, 2 of 5 copies reach it and clients notice nothing."""
    monkeypatch.setattr(builtin, "RELAY_MAX_COPIES", 2)
    slow = backends["slow"]
    before = slow.count()
    router = router_for([{"name": "live", "version": "1"}, {"name": "slow", "version": "2", "shadow": 100}],
                        {"live": backends["live"].start(), "slow": slow.start()},
                        tmp_path_factory.mktemp("nginx-relay-cap"))
    try:
        with requests.Session() as s:
            for i in range(5):
                started = time.monotonic()
                r = s.post(f"{router.url}/v2/models/echo/infer", json={"i": i}, timeout=30)
                assert r.status_code == 200 and r.json()["backend"] == "live"
                assert time.monotonic() - started < 0.8
        wait_until(lambda: router.error_log.read_text().count("limiting connections") == 3, 10,
                   "the relay refusing the 3 copies over its cap")
        assert slow.count() - before == 2
    finally:
        router.stop()
