"""Fixtures for the emulator's conformance tests: a fresh emulator per test (it starts in ~20 ms)
and a tiny raw HTTP client so tests see exactly what goes over the wire."""

from __future__ import annotations

import copy
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import yaml

from tests.kubeapi.server import EmulatorThread

REPO = pathlib.Path(__file__).resolve().parents[2]
TESTDATA = pathlib.Path(__file__).parent / "testdata"


class Client:
    """Raw HTTP against the emulator; every call returns the ``requests.Response``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.s = requests.Session()
        self.s.headers["User-Agent"] = "conformance/1.0"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.s.post(self.url + path, json=body, timeout=10, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.s.put(self.url + path, json=body, timeout=10, **kw)

    def patch(
        self, path: str, body: Any, ctype: str = "application/merge-patch+json", **kw: Any
    ) -> requests.Response:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.s.patch(self.url + path, data=data, headers={"Content-Type": ctype}, timeout=10, **kw)

    def apply(
        self, path: str, body: Any, manager: str = "tester", force: bool = False, **kw: Any
    ) -> requests.Response:
        params = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        return self.patch(path, yaml.safe_dump(body), "application/apply-patch+yaml", params=params, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.s.delete(self.url + path, json=body, timeout=10, **kw)

    def watch(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server ends the stream."""
        params = {
            "watch": "true",
            **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()},
        }
        with self.s.get(self.url + path, params=params, stream=True, timeout=30) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines():
                if line:
                    yield json.loads(line)


TR_PATH = "/apis/dockyard.dev/v1alpha1/namespaces/default/trainingruns"
WIDGETS = "/apis/test.dockyard.dev/v1/namespaces/default/widgets"
CLUSTER_WIDGETS = "/apis/test.dockyard.dev/v1/gadgets"


def widget_crd() -> dict[str, Any]:
    return yaml.safe_load((TESTDATA / "widgets-crd.yaml").read_text())


def gadget_crd() -> dict[str, Any]:
    return yaml.safe_load((TESTDATA / "gadgets-crd.yaml").read_text())


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    base = {"size": 3, "color": "red", "items": [{"name": "a", "weight": 1, "version": "1"}]}
    base.update(spec)
    return {"apiVersion": "test.dockyard.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": base}


def example(kind: str) -> dict[str, Any]:
    for f in sorted((REPO / "manifests" / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                return copy.deepcopy(doc)
    raise LookupError(kind)


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    t = EmulatorThread(crd_dirs=[REPO / "crds", TESTDATA], bookmark_interval=0.2)
    t.start()
    yield t
    t.stop()
    assert not t.emulator.errors, "emulator internal errors:\n" + "\n".join(t.emulator.errors)


@pytest.fixture
def k(emu: EmulatorThread) -> Client:
    return Client(emu.url)


@pytest.fixture
def kubeconfig(emu: EmulatorThread, tmp_path: pathlib.Path) -> pathlib.Path:
    return emu.write_kubeconfig(tmp_path / "kubeconfig")
