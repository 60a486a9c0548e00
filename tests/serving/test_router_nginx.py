"""The builtin router's routing rules, with real nginx in front of tiny local backends.

Fast (no models): checks what the traffic test cannot isolate - force-header edge cases,
nginx map keywords as variant names, spoofed backend headers, path and query preservation -
and the router's edge (``spec.router.limits``, forcing off by default): each refusal's status
and V2 error body, and that a refused request never reaches a variant.
"""

from __future__ import annotations

import collections
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dockyard.api.modeldeployment import ModelDeploymentSpec
from tests.serving.nginx_process import NGINX, NginxRouter

pytestmark = [pytest.mark.serving, pytest.mark.skipif(NGINX is None, reason="nginx binary not installed")]

VARIANTS = {"default": 70, "include": 30, "dark": 0}
VERSIONS = {"default": "11", "include": "12", "dark": "13"}


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per response (no Nagle/delayed-ACK stalls on keep-alive)
    variant = ""

    def _reply(self) -> None:
        body = json.dumps({"backend": self.variant, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # A backend trying to spoof the router's headers: they must be dropped.
        self.send_header("X-Dockyard-Variant", "spoofed")
        self.send_header("X-Dockyard-Model-Version", "999")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRouter]:
    servers = {}
    for name in VARIANTS:
        handler = type(f"Echo_{name}", (_Echo,), {"variant": name})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[name] = srv
    spec = ModelDeploymentSpec.model_validate(
        {
            "modelName": "echo",
            "variants": [{"name": n, "version": VERSIONS[n], "weight": w} for n, w in VARIANTS.items()],
            "router": {"sticky": {"header": "X-User-Id"}, "allowVariantForcing": True},
        }
    )
    ups = {n: f"127.0.0.1:{s.server_address[1]}" for n, s in servers.items()}
    r = NginxRouter(spec, ups, VERSIONS, tmp_path_factory.mktemp("nginx-echo"))
    yield r
    r.stop()
    for srv in servers.values():
        srv.shutdown()


_SESSION = threading.local()


def get(router: NginxRouter, path: str = "/v2/models/echo/infer?x=1", **headers: str) -> requests.Response:
    if not hasattr(_SESSION, "s"):
        _SESSION.s = requests.Session()
    r = _SESSION.s.get(router.url + path, headers=headers, timeout=5)
    assert r.status_code == 200
    backend = r.json()["backend"]
    # The header names the backend that really answered, with that variant's version, once.
    assert r.headers["X-Dockyard-Variant"] == backend
    assert r.headers["X-Dockyard-Model-Version"] == VERSIONS[backend]
    assert r.headers["X-Dockyard-Model"] == "echo"
    assert r.raw.headers.getlist("X-Dockyard-Variant") == [backend]
    return r


def test_path_and_query_are_preserved(router: NginxRouter) -> None:
    assert get(router).json()["path"] == "/v2/models/echo/infer?x=1"
    assert get(router, "/").json()["path"] == "/"


def test_healthz_is_answered_by_the_router(router: NginxRouter) -> None:
    r = requests.get(router.url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.text == "ok\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("default", "default"), ("include", "include"), ("dark", "dark"), ("DARK", "dark")],
)
def test_force_header_routes_by_name_even_weight_zero(router: NginxRouter, value: str, expected: str) -> None:
    for _ in range(10):
        assert get(router, **{"X-Dockyard-Variant": value}).json()["backend"] == expected


@pytest.mark.parametrize("value", ["nope", "dark;", "", "default include", "\\default", "*"])
def test_unknown_force_values_are_ignored(router: NginxRouter, value: str) -> None:
    seen = collections.Counter(
        get(router, **{"X-Dockyard-Variant": value}).json()["backend"] for _ in range(60)
    )
    assert set(seen) == {"default", "include"}  # split as usual; "dark" (weight 0) never drawn


def test_weight_zero_never_drawn_and_sticky_fallback_is_random(router: NginxRouter) -> None:
    seen = collections.Counter(get(router).json()["backend"] for _ in range(400))
    assert seen["dark"] == 0
    # 70/30 over 400 random draws: sd 2.3 points; allow 5 sd.
    assert abs(seen["default"] / 400 - 0.70) < 0.115, seen
    seen_empty = collections.Counter(get(router, **{"X-User-Id": ""}).json()["backend"] for _ in range(100))
    assert set(seen_empty) == {"default", "include"}


def test_sticky_users(router: NginxRouter) -> None:
    per_user = {
        u: {get(router, **{"X-User-Id": f"user-{u}"}).json()["backend"] for _ in range(4)} for u in range(60)
    }
    assert all(len(v) == 1 for v in per_user.values())
    assert {next(iter(v)) for v in per_user.values()} == {"default", "include"}


def test_post_bodies_are_proxied(router: NginxRouter, tmp_path: Path) -> None:
    payload = json.dumps({"inputs": ["x" * 2_000_000]})  # 2 MB: above nginx's 1 MB default
    r = requests.post(
        router.url + "/v2/models/echo/infer",
        data=payload,
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text[:200]


# -- the router's edge ---------------------------------------------------------------------------

EDGE_MAX_BODY = 64 * 1024  # maxBodySize 64Ki
EDGE_TIMEOUT = 1  # timeoutSeconds


class _Recorder(_Echo):
    """Records every request that reaches it; ``/hang`` answers only once ``release`` is set."""

    seen: list[tuple[str, dict[str, str]]]
    lock: threading.Lock
    release: threading.Event

    def _reply(self) -> None:
        with self.lock:
            self.seen.append((self.path, dict(self.headers.items())))
        if self.path == "/hang":
            self.release.wait(60)
        body = json.dumps({"backend": self.variant}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the router gave up on /hang and closed the connection


class Recorders:
    """``main`` (weight 1) and ``dark`` (weight 0) backends that count what reaches them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.handlers: dict[str, type[_Recorder]] = {}
        self.servers: dict[str, http.server.ThreadingHTTPServer] = {}
        for name in ("main", "dark"):
            handler = type(f"Recorder_{name}", (_Recorder,), {
                "variant": name, "seen": [], "lock": threading.Lock(), "release": self.release})
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.handlers[name], self.servers[name] = handler, srv

    def upstreams(self) -> dict[str, str]:
        return {n: f"127.0.0.1:{s.server_address[1]}" for n, s in self.servers.items()}

    def count(self, name: str) -> int:
        with self.handlers[name].lock:
            return len(self.handlers[name].seen)

    def stop(self) -> None:
        self.release.set()
        for srv in self.servers.values():
            srv.shutdown()


def edge_router(recorders: Recorders, workdir: Path, router: dict[str, object]) -> NginxRouter:
    spec = ModelDeploymentSpec.model_validate({
        "modelName": "echo",
        "variants": [{"name": "main", "version": "1", "weight": 1}, {"name": "dark", "version": "2", "weight": 0}],
        "router": router,
    })
    return NginxRouter(spec, recorders.upstreams(), {"main": "1", "dark": "2"}, workdir)


@pytest.fixture(scope="module")
def recorders() -> Iterator[Recorders]:
    r = Recorders()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def edge(recorders: Recorders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRouter]:
    """Forcing off (the default), sticky on X-User-Id, a 64Ki body limit and a 1 s timeout."""
    r = edge_router(recorders, tmp_path_factory.mktemp("nginx-edge"), {
        "sticky": {"header": "X-User-Id"},
        "limits": {"maxBodySize": "64Ki", "timeoutSeconds": EDGE_TIMEOUT},
    })
    yield r
    r.stop()


def v2_error(r: requests.Response, status: int) -> str:
    """The router's own refusal: the status, and a V2 error body {"error": "..."} as JSON."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def test_forcing_off_refuses_the_force_header_with_403(edge: NginxRouter, recorders: Recorders) -> None:
    before = {n: recorders.count(n) for n in ("main", "dark")}
    for value in ("dark", "main", "anything"):  # any value: naming a variant is what is refused
        r = requests.post(f"{edge.url}/v2/models/echo/infer", json={"inputs": []},
                          headers={"X-Dockyard-Variant": value}, timeout=10)
        assert "allowVariantForcing" in v2_error(r, 403)
    assert {n: recorders.count(n) for n in ("main", "dark")} == before  # refused at the edge


def test_internal_headers_never_reach_a_weight_zero_variant(edge: NginxRouter, recorders: Recorders) -> None:
    """Sticky ids hash into the weighted buckets only, and a client's X-Dockyard-Shadow (the
    relay's header) is dropped: with forcing off, nothing a client sends reaches ``dark``."""
    dark_before, main_before = recorders.count("dark"), recorders.count("main")
    with requests.Session() as s:
        for u in range(200):
            r = s.get(f"{edge.url}/v2/models/echo/ready", timeout=10,
                      headers={"X-User-Id": f"user-{u}", "X-Dockyard-Shadow": "dark"})
            assert r.status_code == 200 and r.json()["backend"] == "main"
    assert recorders.count("dark") == dark_before
    assert recorders.count("main") == main_before + 200
    with recorders.handlers["main"].lock:
        headers = [h for _, h in recorders.handlers["main"].seen[main_before:]]
    assert not any("X-Dockyard-Shadow" in h for h in headers)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_gets_413(edge: NginxRouter, recorders: Recorders, chunked: bool) -> None:
    before = recorders.count("main")
    fits = b"x" * EDGE_MAX_BODY
    assert requests.post(f"{edge.url}/v2/models/echo/infer", data=fits, timeout=10).status_code == 200
    too_big = fits + b"x"
    data = iter([too_big[:1000], too_big[1000:]]) if chunked else too_big  # an iterator is sent chunked
    r = requests.post(f"{edge.url}/v2/models/echo/infer", data=data, timeout=10)
    assert "at most 64Ki" in v2_error(r, 413)
    assert recorders.count("main") == before + 1  # only the body that fits was proxied


def test_variant_silent_past_the_timeout_gets_504(edge: NginxRouter) -> None:
    started = time.monotonic()
    r = requests.get(f"{edge.url}/hang", timeout=30)
    elapsed = time.monotonic() - started
    assert f"within {EDGE_TIMEOUT}s" in v2_error(r, 504)
    assert r.headers["X-Dockyard-Variant"] == "main" and r.headers["X-Dockyard-Model-Version"] == "1"
    assert EDGE_TIMEOUT <= elapsed < EDGE_TIMEOUT + 10


def test_forcing_on_reaches_a_weight_zero_variant(recorders: Recorders, tmp_path: Path) -> None:
    router = edge_router(recorders, tmp_path, {"allowVariantForcing": True})
    try:
        before = recorders.count("dark")
        r = requests.get(f"{router.url}/v2/models/echo/ready", headers={"X-Dockyard-Variant": "dark"}, timeout=10)
        assert r.status_code == 200 and r.json()["backend"] == "dark"
        assert r.headers["X-Dockyard-Variant"] == "dark" and r.headers["X-Dockyard-Model-Version"] == "2"
        assert recorders.count("dark") == before + 1
    finally:
        router.stop()


def test_client_above_the_rate_limit_gets_429(recorders: Recorders, tmp_path: Path) -> None:
    router = edge_router(recorders, tmp_path, {"limits": {"rateLimit": {"requestsPerSecond": 1, "burst": 2}}})
    try:
        before = recorders.count("main")
        with requests.Session() as s:
            statuses = []
            # 1 request/s with a burst of 2: back-to-back requests are refused from the 4th on
            # at the latest (later only if this machine takes seconds per request).
            while 429 not in statuses and len(statuses) < 50:
                r = s.get(f"{router.url}/v2/models/echo/ready", timeout=10)
                statuses.append(r.status_code)
            assert "1 requests per second" in v2_error(r, 429)
            assert r.headers["Retry-After"] == "1"
            served = statuses.count(200)
            assert served >= 3 and set(statuses) == {200, 429}
            assert recorders.count("main") == before + served  # the refused request never reached a variant
            # A rate, not a ban: the client is served again once the bucket drains.
            deadline = time.monotonic() + 10
            while (status := s.get(f"{router.url}/v2/models/echo/ready", timeout=10).status_code) == 429:
                assert time.monotonic() < deadline, "still refused 10 s after the limit was hit"
                time.sleep(0.1)
            assert status == 200
    finally:
        router.stop()
