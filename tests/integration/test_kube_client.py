"""dockyard.kube against the real control plane: credentials that rotate, lists that
paginate, writes owned by the `dockyard` field manager (issue 11).

The exec-plugin tests give the client a kubeconfig whose user is an exec plugin (a Python
script written to tmp). The plugin prints an ExecCredential with the token currently in a
file, and counts its runs. The tokens are real: TokenRequest tokens of two ServiceAccounts of
the test's namespace. Who the client is, is asked of the API (SelfSubjectReview), so the test
sees which token each request carried.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.kube import KubeClient
from tests.plugins.kube import KubeEnv

pytestmark = pytest.mark.integration

PLUGIN = r'''
import datetime as dt, json, pathlib, sys
state = pathlib.Path(sys.argv[1])
lifetime = float(sys.argv[2])
runs = state / "runs"
runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lifetime)
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": (state / "token").read_text().strip(),
               "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
}))
'''


def _cluster_entry(kube: KubeEnv) -> dict[str, Any]:
    cfg = yaml.safe_load(Path(kube.kubeconfig).read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    return next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])


def _service_account_token(kube: KubeEnv, name: str) -> str:
    ns = kube.namespace
    kube.cluster.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
    out = kube.cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
    )
    return str(out["status"]["token"])


def _refused(kube: KubeEnv, token: str) -> bool:
    """Does the API server refuse this token (401)?"""
    cluster = _cluster_entry(kube)["cluster"]
    ctx = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    req = urllib.request.Request(f"{cluster['server']}/version", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10):
            return False
    except urllib.error.HTTPError as e:
        return e.code == 401


@pytest.fixture
def exec_identity(kube: KubeEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """(kubeconfig, state dir, {sa name: token}) for an exec plugin whose tokens live
    ``request.param`` seconds."""
    lifetime = request.param
    tokens = {name: _service_account_token(kube, name) for name in ("exec-a", "exec-b")}
    state = tmp_path / "exec-state"
    state.mkdir()
    (state / "token").write_text(tokens["exec-a"])
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    cluster = _cluster_entry(kube)
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [cluster],
        "users": [{"name": "exec", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(plugin), str(state), str(lifetime)], "interactiveMode": "Never",
        }}}],
        "contexts": [{"name": "exec", "context": {"cluster": cluster["name"], "user": "exec"}}],
    }
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path, state, tokens


async def whoami(client: KubeClient) -> str:
    review = await client.create({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                                  "metadata": {}})
    return str(review["status"]["userInfo"]["username"])


def runs(state: Path) -> int:
    return int((state / "runs").read_text())


@pytest.mark.parametrize("exec_identity", [12], indirect=True)
async def test_exec_plugin_runs_again_when_its_token_expires(kube: KubeEnv, exec_identity: Any) -> None:
    """The plugin's token expires in 12 s (the client renews 10 s early): after that, the next
    request runs the plugin again and carries the new token, with no 401 needed."""
    _, state, tokens = exec_identity
    client = KubeClient.from_environment()
    try:
        sa = f"system:serviceaccount:{kube.namespace}"
        assert await whoami(client) == f"{sa}:exec-a"
        first = runs(state)
        (state / "token").write_text(tokens["exec-b"])  # the "provider" rotates the token
        deadline = time.monotonic() + 15  # the renewal is due 2 s after the token was issued
        while (who := await whoami(client)) != f"{sa}:exec-b" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert who == f"{sa}:exec-b"
        assert runs(state) > first
    finally:
        await client.close()


@pytest.mark.parametrize("exec_identity", [3600], indirect=True)
async def test_exec_plugin_runs_again_after_a_401(kube: KubeEnv, exec_identity: Any) -> None:
    """A token valid for an hour is reused (the plugin is not run per request); when the API
    server stops accepting it (its ServiceAccount deleted), the 401 makes the client run the
    plugin again and the request succeeds with the new token."""
    _, state, tokens = exec_identity
    client = KubeClient.from_environment()
    try:
        sa = f"system:serviceaccount:{kube.namespace}"
        assert await whoami(client) == f"{sa}:exec-a"
        first = runs(state)
        assert await whoami(client) == f"{sa}:exec-a"
        assert runs(state) == first, "the plugin ran again although its token was still valid"

        (state / "token").write_text(tokens["exec-b"])
        kube.cluster.request("DELETE", f"/api/v1/namespaces/{kube.namespace}/serviceaccounts/exec-a")
        deadline = time.monotonic() + 30
        while not _refused(kube, tokens["exec-a"]):
            assert time.monotonic() < deadline, "the deleted ServiceAccount's token is still accepted"
            time.sleep(0.2)

        assert await whoami(client) == f"{sa}:exec-b"
        assert runs(state) == first + 1
    finally:
        await client.close()


async def test_list_returns_every_page(kube: KubeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """More objects than one page: the client follows `continue` and returns them all."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for i in range(7):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"page-{i}", "labels": {"page-test": "yes"}}})
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}})
    client = KubeClient.from_environment()
    client.page_limit = 3
    lists: list[dict[str, Any]] = []
    request = client.request

    async def counting(method: str, path: str, **kw: Any) -> Any:
        if method == "GET" and path.endswith("/configmaps"):
            lists.append(kw.get("params") or {})
        return await request(method, path, **kw)

    client.request = counting  # type: ignore[method-assign]
    try:
        items = await client.list("v1", "ConfigMap", kube.namespace, label_selector="page-test=yes")
    finally:
        await client.close()
    assert sorted(o["metadata"]["name"] for o in items) == [f"page-{i}" for i in range(7)]
    assert len(lists) == 3, lists  # 3 + 3 + 1
    assert all(p.get("limit") == 3 for p in lists), lists


async def test_every_write_is_owned_by_the_dockyard_field_manager(kube: KubeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    ns = kube.namespace
    client = KubeClient.from_environment()
    try:
        await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "created", "namespace": ns}, "data": {"a": "1"}})
        await client.merge_patch("v1", "ConfigMap", ns, "created", {"data": {"b": "2"}})
        await client.apply({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "applied", "namespace": ns}, "data": {"a": "1"}})
        await client.merge_patch("v1", "ConfigMap", ns, "applied", {"data": {"c": "3"}})
        for name in ("created", "applied"):
            obj = await client.get("v1", "ConfigMap", ns, name)
            assert obj is not None
            managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
            assert {m for m, _ in managers} == {"dockyard"}, json.dumps(obj["metadata"]["managedFields"])
        assert await client.get("v1", "ConfigMap", ns, "missing") is None
        assert await client.delete("v1", "ConfigMap", ns, "created") is True
        assert await client.delete("v1", "ConfigMap", ns, "created") is False
    finally:
        await client.close()



@pytest.mark.parametrize("exec_identity", [3600], indirect=True)
async def test_kopf_logs_in_with_the_same_credentials(kube: KubeEnv, exec_identity: Any) -> None:
    """kopf's login handler gets the controllers' credentials (one loader, one plugin): the
    token the plugin printed, its expiry, and a fresh run of the plugin when kopf asks again
    (it does after a 401)."""
    from dockyard.kube import Credentials, kopf_login

    _, state, tokens = exec_identity
    credentials = Credentials()
    client = KubeClient(credentials)
    try:
        info = await kopf_login(credentials, first=True)
        assert (info.scheme, info.token) == ("Bearer", tokens["exec-a"])
        assert info.expiration is not None and info.expiration > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)
        await whoami(client)
        assert runs(state) == 1, "kopf and the client loaded the credentials separately"
        (state / "token").write_text(tokens["exec-b"])
        info = await kopf_login(credentials, first=False)
        assert info.token == tokens["exec-b"] and runs(state) == 2
        assert await whoami(client) == f"system:serviceaccount:{kube.namespace}:exec-b"
    finally:
        await client.close()
