"""The hand-written aiohttp client dockyard.kube was before issue 11, kept only so that
bench/bench_kube_clients.py can measure it against its replacement. Not used by the operator.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

log = logging.getLogger(__name__)

FIELD_MANAGER = "dockyard"

# apiVersion/kind -> plural, namespaced. Only kinds the operator touches.
KNOWN_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Event"): ("events", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("dockyard.dev/v1alpha1", "Dataset"): ("datasets", True),
    ("dockyard.dev/v1alpha1", "TrainingRun"): ("trainingruns", True),
    ("dockyard.dev/v1alpha1", "ModelDeployment"): ("modeldeployments", True),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("httproutes", True),
    ("networking.istio.io/v1", "VirtualService"): ("virtualservices", True),
    ("machinelearning.seldon.io/v1", "SeldonDeployment"): ("seldondeployments", True),
}


class ApiError(Exception):
    """A Kubernetes API error (the body's Status, when there is one)."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: Any = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    try:
        plural, namespaced = KNOWN_KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unknown kind {api_version}/{kind}") from None
    return path_for(api_version, plural, namespace if namespaced else None, name, subresource)


def path_for(api_version: str, plural: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


@dataclass
class Connection:
    server: str
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | bool


def load_connection() -> Connection:
    """Resolve the API server and credentials like kubectl does."""
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    cfg = kclient.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=cfg)
    except kconfig.ConfigException:
        kconfig.load_kube_config(client_configuration=cfg)
    headers: dict[str, str] = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        prefix = cfg.api_key_prefix.get("authorization", "")
        headers["Authorization"] = f"{prefix} {token}".strip() if prefix else token
    if cfg.username and cfg.password:
        import base64

        cred = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
        headers["Authorization"] = f"Basic {cred}"
    ctx: ssl.SSLContext | bool = False
    if cfg.host.startswith("https"):
        if cfg.verify_ssl:
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return Connection(server=cfg.host.rstrip("/"), headers=headers, ssl_context=ctx)


class KubeClient:
    """Async client; one per operator process, shared by all controllers."""

    def __init__(self, connection: Connection, *, max_retries: int = 5, timeout: float = 30.0):
        self._conn = connection
        self._max_retries = max_retries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> KubeClient:
        return cls(load_connection())

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._conn.ssl_context, limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._conn.headers, timeout=self._timeout
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self._conn.server + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        delay = 0.2
        for attempt in range(self._max_retries + 1):
            session = await self._get_session()
            try:
                async with session.request(method, url, data=data, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status < 400:
                        return json.loads(text) if text else None
                    retryable = resp.status == 429 or resp.status >= 500
                    if retryable and attempt < self._max_retries:
                        retry_after = resp.headers.get("Retry-After")
                        wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                        log.debug("%s %s -> %s, retrying in %.1fs", method, path, resp.status, wait)
                        await asyncio.sleep(min(wait, 30.0) + random.uniform(0, 0.1))
                        delay = min(delay * 2, 10.0)
                        continue
                    raise _error_from(resp.status, text)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt >= self._max_retries:
                    raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {exc}") from exc
                await asyncio.sleep(delay + random.uniform(0, 0.1))
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- typed helpers -------------------------------------------------------------------
    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request("GET", resource_path(api_version, kind, namespace, name))
            return result
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        result = await self.request(
            "GET", resource_path(api_version, kind, namespace), params={"labelSelector": label_selector}
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        result: dict[str, Any] = await self.request("POST", path, params={"fieldManager": FIELD_MANAGER}, body=obj)
        return result

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply (create or update), owned by the `dockyard` field manager."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true" if force else None},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            resource_path(api_version, kind, namespace, name, subresource),
            params={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete in the background (children follow by ownerReference). False if already gone."""
        try:
            await self.request(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except ApiError as exc:
            if exc.not_found:
                return False
            raise


def _error_from(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "", text[:500])
    if isinstance(body, dict):
        return ApiError(status, str(body.get("reason", "")), str(body.get("message", "")), body)
    return ApiError(status, "", text[:500])
