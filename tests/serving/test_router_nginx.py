"""The builtin router's routing rules, with real nginx in front of tiny local backends.

Fast (no models): checks what the traffic test cannot isolate - force-header edge cases,
nginx map keywords as variant names, spoofed backend headers, path and query preservation.
"""

from __future__ import annotations

import collections
import http.server
import json
import threading
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

    do_GET = _reply

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
            "router": {"sticky": {"header": "X-User-Id"}},
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
